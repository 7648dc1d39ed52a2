#pragma once
/// \file
/// Data-parallel training across processes and machines on PyTorch's c10d: the job's
/// environment, a process group (Gloo on CPU, NCCL on CUDA), and a launcher for one machine.
/// Not part of `sedensenet.hpp`: it needs c10d's and Gloo's headers (Debian: libgloo-dev).
///
/// Example (`sedensenet train --nproc 2` does the same):
/// ```
/// auto env = sedensenet::distributed::Environment::from_environment();
/// sedensenet::Trainer trainer(net, options);
/// if (env.distributed()) trainer.set_communicator(sedensenet::distributed::ProcessGroup::create(env));
/// trainer.fit(train, &test);  // each rank trains on its shard; rank 0 writes the run folder
/// ```

#include "sedensenet/distributed/environment.hpp"
#include "sedensenet/distributed/launch.hpp"
#include "sedensenet/distributed/process_group.hpp"
#include "sedensenet/train/communicator.hpp"
