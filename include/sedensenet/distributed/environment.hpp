#pragma once
/// \file
/// Where a distributed job's rendezvous information comes from: the environment variables that
/// torchrun, `sedensenet train --nproc` and Slurm wrappers set.

#include <cstdint>
#include <cstdlib>
#include <string>

#include "sedensenet/util/errors.hpp"

namespace sedensenet::distributed {

/// A process's place in a distributed job.
///
/// Read from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (the
/// torchrun names). Under Slurm, when RANK and WORLD_SIZE are not set, SLURM_PROCID, SLURM_NTASKS
/// and SLURM_LOCALID stand in for them (MASTER_ADDR must still be set, usually to the first host
/// of the allocation).
struct Environment {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;

  /// More than one process.
  bool distributed() const { return world_size > 1; }

  /// The job described by the environment; a single process (world size 1) when WORLD_SIZE (or
  /// Slurm's variables with MASTER_ADDR) is not set. Throws `std::invalid_argument` naming the
  /// variable when one is malformed or inconsistent.
  static Environment from_environment() {
    Environment env;
    const bool torchrun = std::getenv("WORLD_SIZE") != nullptr;
    const bool slurm = !torchrun && std::getenv("SLURM_NTASKS") != nullptr &&
                       std::getenv("MASTER_ADDR") != nullptr;
    if (!torchrun && !slurm) return env;
    const char* world_var = torchrun ? "WORLD_SIZE" : "SLURM_NTASKS";
    const char* rank_var = torchrun ? "RANK" : "SLURM_PROCID";
    const char* local_var = torchrun ? "LOCAL_RANK" : "SLURM_LOCALID";
    env.world_size = integer(world_var, 1, 1 << 20);
    if (env.world_size == 1) return env;
    if (std::getenv(rank_var) == nullptr) {
      throw std::invalid_argument(std::string(world_var) + "=" + std::getenv(world_var) + " but " +
                                  rank_var + " is not set: set it to this process's rank (0 .. " +
                                  std::to_string(env.world_size - 1) + ")");
    }
    env.rank = integer(rank_var, 0, env.world_size - 1);
    if (std::getenv("MASTER_ADDR") == nullptr || std::string(std::getenv("MASTER_ADDR")).empty()) {
      throw std::invalid_argument(std::string(world_var) + "=" + std::to_string(env.world_size) +
                                  " but MASTER_ADDR is not set: set it to the host name or address "
                                  "of the machine that runs rank 0");
    }
    env.master_addr = std::getenv("MASTER_ADDR");
    if (std::getenv("MASTER_PORT") != nullptr) env.master_port = static_cast<int>(integer("MASTER_PORT", 1, 65535));
    if (std::getenv(local_var) != nullptr) env.local_rank = integer(local_var, 0, env.world_size - 1);
    if (std::getenv("LOCAL_WORLD_SIZE") != nullptr) {
      env.local_world_size = integer("LOCAL_WORLD_SIZE", 1, env.world_size);
    } else if (slurm && std::getenv("SLURM_NTASKS_PER_NODE") != nullptr) {
      // "4" or "4(x2)": the count before any repetition suffix.
      env.local_world_size = std::max<int64_t>(1, std::atoll(std::getenv("SLURM_NTASKS_PER_NODE")));
    }
    return env;
  }

  /// "rank 1 of 2 (local rank 1), rendezvous 127.0.0.1:29500".
  std::string describe() const {
    return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local rank " +
           std::to_string(local_rank) + "), rendezvous " + master_addr + ":" +
           std::to_string(master_port);
  }

 private:
  static int64_t integer(const char* name, int64_t min, int64_t max) {
    const std::string text = std::getenv(name);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || value < min || value > max) {
      throw std::invalid_argument("environment variable " + std::string(name) + "='" + text +
                                  "' must be an integer in [" + std::to_string(min) + ", " +
                                  std::to_string(max) + "]");
    }
    return value;
  }
};

}  // namespace sedensenet::distributed
