#pragma once
/// \file
/// The data pipeline: image decoding, ImageFolder, transforms, the parallel loader, the
/// Fashion-MNIST preparation, and the Trainer's batch sources and MixUp/CutMix.

#include "sedensenet/data/batch_mix.hpp"
#include "sedensenet/data/batch_source.hpp"
#include "sedensenet/data/fashion_mnist.hpp"
#include "sedensenet/data/image.hpp"
#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/loader.hpp"
#include "sedensenet/data/rng.hpp"
#include "sedensenet/data/split_record.hpp"
#include "sedensenet/data/transforms.hpp"
