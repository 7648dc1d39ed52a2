#pragma once
/// \file
/// Training: `Experiment` (an image folder to a run folder in one call), the options, the
/// Trainer and its parts (optimizer factory, run state, run folder, data parallelism), metrics,
/// history, progress output.

#include "sedensenet/train/data_options.hpp"
#include "sedensenet/train/data_parallel.hpp"
#include "sedensenet/train/experiment.hpp"
#include "sedensenet/train/history.hpp"
#include "sedensenet/train/legacy_checkpoint.hpp"
#include "sedensenet/train/metrics.hpp"
#include "sedensenet/train/optimizer_factory.hpp"
#include "sedensenet/train/optimizer_state.hpp"
#include "sedensenet/train/options.hpp"
#include "sedensenet/train/progress.hpp"
#include "sedensenet/train/run_folder.hpp"
#include "sedensenet/train/run_state.hpp"
#include "sedensenet/train/schedule.hpp"
#include "sedensenet/train/trainer.hpp"
#include "sedensenet/train/weight_average.hpp"
