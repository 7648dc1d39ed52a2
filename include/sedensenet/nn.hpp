#pragma once
/// \file
/// The model: building blocks, the network, its summary and the checkpoint utility.

#include "sedensenet/nn/attention.hpp"
#include "sedensenet/nn/batch_norm_relu.hpp"
#include "sedensenet/nn/checkpoint.hpp"
#include "sedensenet/nn/dense_block.hpp"
#include "sedensenet/nn/dense_layer.hpp"
#include "sedensenet/nn/densenet.hpp"
#include "sedensenet/nn/named_sequential.hpp"
#include "sedensenet/nn/options.hpp"
#include "sedensenet/nn/shared_block.hpp"
#include "sedensenet/nn/summary.hpp"
#include "sedensenet/nn/transition.hpp"
