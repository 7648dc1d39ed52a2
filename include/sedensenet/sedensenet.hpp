#pragma once
/// \file
/// Umbrella header: everything in the public API. ("The reference", in these comments, is the
/// Python SE-DenseNet project this library reproduces: docs/reference.md.)
///
/// Example:
/// ```
/// #include <sedensenet/sedensenet.hpp>
/// sedensenet::DenseNet net(sedensenet::DenseNetOptions::densenet_bc(100, 12).num_classes(10));
/// ```

#include "sedensenet/data.hpp"
#include "sedensenet/io/archive.hpp"
#include "sedensenet/io/checkpoint_file.hpp"
#include "sedensenet/io/files.hpp"
#include "sedensenet/io/model_config.hpp"
#include "sedensenet/io/pickle.hpp"
#include "sedensenet/io/state_dict.hpp"
#include "sedensenet/io/trained_model.hpp"
#include "sedensenet/nn.hpp"
#include "sedensenet/serve.hpp"
#include "sedensenet/train.hpp"
#include "sedensenet/util/allocator.hpp"
#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/memory.hpp"
#include "sedensenet/util/svg.hpp"
#include "sedensenet/util/threads.hpp"
#include "sedensenet/version.hpp"
