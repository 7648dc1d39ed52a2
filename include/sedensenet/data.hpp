#pragma once
/// \file
/// The data pipeline: image decoding, ImageFolder, transforms, the parallel loader, and the
/// Fashion-MNIST preparation.

#include "sedensenet/data/fashion_mnist.hpp"
#include "sedensenet/data/image.hpp"
#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/loader.hpp"
#include "sedensenet/data/rng.hpp"
#include "sedensenet/data/transforms.hpp"
