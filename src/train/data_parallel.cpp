#include "sedensenet/train/data_parallel.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include "sedensenet/util/errors.hpp"
#include "sedensenet/util/json.hpp"

namespace sedensenet {

namespace {

torch::Tensor as_tensor(const std::vector<double>& values) {
  return torch::tensor(values, torch::kDouble);
}

std::vector<double> as_vector(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

RunningMetrics from_sums(const std::vector<double>& s) {
  return RunningMetrics::from_sums({s.at(0), s.at(1), s.at(2), s.at(3)});
}

std::vector<double> sums_of(const RunningMetrics& m) {
  const auto s = m.sums();
  return std::vector<double>(s.begin(), s.end());
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<Communicator> communicator, double bucket_mb,
                           double first_bucket_mb)
    : comm_(communicator && communicator->world_size() > 1 ? std::move(communicator) : nullptr),
      bucket_mb_(bucket_mb), first_bucket_mb_(first_bucket_mb) {
  TORCH_CHECK(bucket_mb > 0 && first_bucket_mb > 0, "set_communicator: bucket sizes must be > 0");
}

nlohmann::json DataParallel::describe() const {
  if (!comm_) return nullptr;
  return {{"world_size", comm_->world_size()}, {"group", comm_->describe()}};
}

void DataParallel::start(data::BatchSource& train, data::BatchSource* test, torch::nn::Module& module,
                         bool keep_buffers) {
  if (!comm_) return;
  const int64_t me = comm_->rank(), world = comm_->world_size();
  train.shard(me, world, /*pad=*/true);
  if (test != nullptr) test->shard(me, world, /*pad=*/false);
  const int64_t batches = train.batches_per_epoch();
  auto range = torch::tensor({batches, -batches}, torch::kLong);
  comm_->all_reduce(range, Communicator::Op::max);
  TORCH_CHECK(range[0].item<int64_t>() == -range[1].item<int64_t>(), "rank ", me, ": the ranks "
              "disagree on the number of training batches per epoch (from ", -range[1].item<int64_t>(),
              " to ", range[0].item<int64_t>(), "; this rank has ", batches, "): every rank must "
              "read the same data with the same batch size");
  broadcast_module(*comm_, module, 0, /*buffers=*/!keep_buffers);
  if (!reducer_) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, module.parameters(), bucket_mb_, first_bucket_mb_);
  }
}

DataParallel::StepCheck DataParallel::check_step(double loss, bool stop_requested) {
  StepCheck check;
  if (!comm_) {
    if (!std::isfinite(loss)) check.non_finite_ranks.push_back(0);
    check.stop = stop_requested;
    return check;
  }
  const int64_t world = comm_->world_size(), me = comm_->rank();
  auto flags = torch::zeros({2 * world}, torch::kDouble);
  flags[me] = std::isfinite(loss) ? 0.0 : 1.0;
  flags[world + me] = stop_requested ? 1.0 : 0.0;
  comm_->all_reduce(flags);
  const auto flag = flags.accessor<double, 1>();
  for (int64_t r = 0; r < world; ++r) {
    if (flag[r] > 0) check.non_finite_ranks.push_back(r);
    if (flag[world + r] > 0) check.stop = true;
  }
  return check;
}

void DataParallel::backward(const torch::Tensor& loss) {
  if (!comm_) {
    if (loss.defined()) loss.backward();
    return;
  }
  TORCH_CHECK(reducer_, "DataParallel::backward before start");
  if (!loss.defined()) {
    reducer_->finish_without_backward();
    return;
  }
  reducer_->prepare();
  loss.backward();  // buckets are all-reduced as their gradients arrive
  reducer_->finish();
}

std::vector<double> DataParallel::sum(std::vector<double> values) {
  if (!comm_ || values.empty()) return values;
  auto t = as_tensor(values);
  comm_->all_reduce(t);
  return as_vector(t);
}

std::vector<double> DataParallel::max(std::vector<double> values) {
  if (!comm_ || values.empty()) return values;
  auto t = as_tensor(values);
  comm_->all_reduce(t, Communicator::Op::max);
  return as_vector(t);
}

RunningMetrics DataParallel::sum(const RunningMetrics& local) {
  return comm_ ? from_sums(sum(sums_of(local))) : local;
}

void DataParallel::average_buffers(torch::nn::Module& module) {
  if (comm_) sedensenet::average_buffers(*comm_, module);
}

void DataParallel::shard_for_evaluation(data::BatchSource& source) {
  if (comm_) source.shard(comm_->rank(), comm_->world_size(), /*pad=*/false);
}

void DataParallel::reduce_evaluation(RunningMetrics& running, ConfusionMatrix& confusion,
                                     int64_t& classes) {
  if (!comm_) return;
  classes = static_cast<int64_t>(max({static_cast<double>(classes)}).at(0));
  if (confusion.classes() != classes) confusion = ConfusionMatrix(classes);
  running = sum(running);
  auto counts = confusion.counts().clone();
  comm_->all_reduce(counts);
  confusion = ConfusionMatrix::from_counts(counts);
}

std::string DataParallel::from_root(const std::function<std::string()>& read) {
  if (!comm_) return read();
  std::string bytes, error;
  if (comm_->rank() == 0) {
    try {
      bytes = read();
    } catch (const std::exception& e) {
      error = error_message(e);
    }
  }
  try {
    return broadcast_bytes(*comm_, bytes, 0, error);
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, error_message(e));
  }
  return {};
}

io::NamedTensors DataParallel::gather_rank_state(nlohmann::json& state, const torch::nn::Module& module,
                                                 bool mid_epoch, const nlohmann::json& partial) {
  io::NamedTensors tensors;
  if (!comm_) return tensors;
  state["world_size"] = comm_->world_size();
  tensors.emplace_back("rng_cpu_ranks",
                       torch::stack(comm_->all_gather(at::detail::getDefaultCPUGenerator().get_state())));
  if (mid_epoch) {
    // Mid-epoch, the ranks' BatchNorm statistics still differ: keep each.
    std::vector<torch::Tensor> parts;
    for (const auto& b : module.buffers()) {
      if (b.is_floating_point()) parts.push_back(b.detach().reshape({-1}).to(torch::kCPU, torch::kDouble));
    }
    if (!parts.empty()) tensors.emplace_back("buffers_ranks", torch::stack(comm_->all_gather(torch::cat(parts))));
  }
  if (!partial.is_null()) {
    auto all = comm_->all_gather(as_tensor(sums_of(RunningMetrics::from_json(partial))));
    state["partial_ranks"] = nlohmann::json::array();
    for (auto& t : all) state["partial_ranks"].push_back(from_sums(as_vector(t)).to_json());
  }
  return tensors;
}

DataParallel::RankState DataParallel::restore_rank_state(const io::CheckpointFile& last,
                                                         const std::string& name,
                                                         torch::nn::Module& module, int64_t epoch,
                                                         int64_t batch_in_epoch, RankState saved) {
  const auto& state = last.state;
  const auto saved_world = util::json_integer<int64_t>(state.value("world_size", nlohmann::json(1)),
                                                       name + ": run state 'world_size'");
  if (saved_world != world_size()) {
    TORCH_CHECK(batch_in_epoch == 0, "cannot resume: ", name, " was saved in the middle of epoch ",
                epoch + 1, " by a run on ", saved_world, " process(es); resume it on ", saved_world,
                " (this run has ", world_size(), ")");
    if (rank() != 0) saved.rng = torch::Tensor();  // seeded from the seed, the rank and the epoch
    return saved;
  }
  if (saved_world == 1) return saved;
  const auto all = last.extra_tensor("rng_cpu_ranks");
  TORCH_CHECK(all.defined() && all.dim() == 2 && all.size(0) == saved_world &&
                  all.size(1) == saved.rng.numel() && all.scalar_type() == torch::kUInt8,
              "cannot resume: ", name, " has no valid per-rank random state");
  saved.rng = all[rank()].clone();
  if (state.contains("partial_ranks") && !state.at("partial_ranks").is_null()) {
    saved.partial = state.at("partial_ranks").at(static_cast<size_t>(rank()));
  }
  // Stopped mid-epoch: each rank's own BatchNorm statistics (averaged at the epoch's end).
  const auto buffers = last.extra_tensor("buffers_ranks");
  if (buffers.defined()) {
    int64_t total = 0;
    for (auto& b : module.buffers()) total += b.is_floating_point() ? b.numel() : 0;
    TORCH_CHECK(buffers.dim() == 2 && buffers.size(0) == saved_world && buffers.size(1) == total,
                "cannot resume: ", name, " has per-rank statistics of another model");
    auto row = buffers[rank()];
    torch::NoGradGuard no_grad;
    int64_t offset = 0;
    for (auto& b : module.buffers()) {
      if (!b.is_floating_point()) continue;
      b.copy_(row.narrow(0, offset, b.numel()).view_as(b));
      offset += b.numel();
    }
  }
  return saved;
}

}  // namespace sedensenet
