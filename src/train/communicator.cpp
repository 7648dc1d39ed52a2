#include "sedensenet/train/communicator.hpp"

namespace sedensenet {

void broadcast_module(Communicator& comm, torch::nn::Module& module, int64_t root,
                      bool buffers) {
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p);
  if (buffers) {
    for (auto& b : module.buffers()) tensors.push_back(b);
  }
  detail::coalesced(tensors, [&](torch::Tensor& flat) {
    std::vector<torch::Tensor> one{flat};
    comm.broadcast(one, root);
  });
}

void average_buffers(Communicator& comm, torch::nn::Module& module) {
  std::vector<torch::Tensor> tensors;
  for (auto& b : module.buffers()) {
    if (b.is_floating_point()) tensors.push_back(b);
  }
  const auto world = static_cast<double>(comm.world_size());
  detail::coalesced(tensors, [&](torch::Tensor& flat) {
    std::vector<torch::Tensor> one{flat};
    comm.all_reduce(one);
    flat.div_(world);
  });
}

std::string broadcast_bytes(Communicator& comm, std::string bytes, int64_t root,
                            const std::string& error) {
  const bool is_root = comm.rank() == root;
  const std::string& payload = is_root && !error.empty() ? error : bytes;
  auto header = torch::zeros({2}, torch::kLong);
  if (is_root) {
    header[0] = error.empty() ? 1 : 0;
    header[1] = static_cast<int64_t>(payload.size());
  }
  std::vector<torch::Tensor> h{header};
  comm.broadcast(h, root);
  const bool ok = header[0].item<int64_t>() == 1;
  const auto size = header[1].item<int64_t>();
  auto data = torch::empty({size}, torch::kUInt8);
  if (is_root && size > 0) std::memcpy(data.data_ptr(), payload.data(), static_cast<size_t>(size));
  if (size > 0) {
    std::vector<torch::Tensor> d{data};
    comm.broadcast(d, root);
  }
  std::string out(static_cast<size_t>(size), '\0');
  if (size > 0) std::memcpy(out.data(), data.data_ptr(), static_cast<size_t>(size));
  if (!ok) throw std::runtime_error(out);
  return out;
}

}  // namespace sedensenet

namespace sedensenet {

void Communicator::all_reduce(std::vector<torch::Tensor>& tensors, Op op) {
  all_reduce_async(tensors, op)->wait();
}

void Communicator::all_reduce(torch::Tensor& tensor, Op op) {
  std::vector<torch::Tensor> tensors{tensor};
  all_reduce(tensors, op);
}

GradientReducer::GradientReducer(Communicator& comm, std::vector<torch::Tensor> parameters, double bucket_mb,
                double first_bucket_mb)
    : comm_(&comm) {
  std::vector<torch::Tensor> trainable;
  for (auto& p : parameters) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  TORCH_CHECK(!trainable.empty(), "GradientReducer: no trainable parameters");
  // Buckets in reverse order of the parameters.
  double limit = first_bucket_mb * 1024 * 1024;
  for (auto it = trainable.rbegin(); it != trainable.rend(); ++it) {
    const auto& p = *it;
    const double bytes = static_cast<double>(p.numel() * p.element_size());
    bool fits = !buckets_.empty() && buckets_.back().bytes + bytes <= limit &&
                buckets_.back().type == p.scalar_type() && buckets_.back().device == p.device();
    if (!fits) {
      if (!buckets_.empty()) limit = bucket_mb * 1024 * 1024;
      buckets_.push_back(Bucket{});
      buckets_.back().type = p.scalar_type();
      buckets_.back().device = p.device();
    }
    auto& b = buckets_.back();
    slots_.push_back(Slot{p, buckets_.size() - 1, b.numel, p.numel()});
    b.numel += p.numel();
    b.bytes += bytes;
    b.slots.push_back(slots_.size() - 1);
  }
  for (auto& b : buckets_) {
    b.flat = torch::zeros({b.numel}, torch::TensorOptions().dtype(b.type).device(b.device));
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    auto& p = slots_[i].parameter;
    hooks_.push_back(p.register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    try {
      slots_[i].parameter.remove_hook(hooks_[i]);
    } catch (...) {  // the parameter's autograd meta may already be gone
    }
  }
}

void GradientReducer::prepare() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& s : slots_) s.arrivals = 0;
  for (auto& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
    b.launched = false;
  }
  next_launch_ = 0;
  repeated_ = false;
  armed_ = true;
}

void GradientReducer::finish() {
  const auto started = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
    for (auto& s : slots_) {
      if (s.arrivals == 0) bucket_of(s).flat.narrow(0, s.offset, s.numel).zero_();
    }
    for (auto& b : buckets_) b.ready = b.slots.size();
    launch_ready();
  }
  const double world = static_cast<double>(comm_->world_size());
  for (auto& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
    b.flat.div_(world);
  }
  if (repeated_) {
    // A gradient arrived after its bucket had left: reduce the accumulated .grad instead.
    std::vector<torch::Tensor> grads;
    for (auto& s : slots_) {
      if (!s.parameter.grad().defined()) s.parameter.mutable_grad() = torch::zeros_like(s.parameter);
      grads.push_back(s.parameter.grad());
    }
    detail::coalesced(grads, [&](torch::Tensor& flat) {
      std::vector<torch::Tensor> one{flat};
      comm_->all_reduce(one);
      flat.div_(world);
    });
  } else {
    torch::NoGradGuard no_grad;
    for (auto& s : slots_) {
      auto mean = bucket_of(s).flat.narrow(0, s.offset, s.numel).view_as(s.parameter);
      auto& grad = s.parameter.mutable_grad();
      if (grad.defined()) {
        grad.copy_(mean);
      } else {
        grad = mean.clone();
      }
    }
  }
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ++steps_;
}

void GradientReducer::finish_without_backward() {
  prepare();
  finish();
}

void GradientReducer::on_gradient(size_t index, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  auto& s = slots_[index];
  auto& b = bucket_of(s);
  torch::NoGradGuard no_grad;
  auto slot = b.flat.narrow(0, s.offset, s.numel);
  if (s.arrivals++ == 0) {
    slot.copy_(grad.reshape({-1}));
    if (++b.ready == b.slots.size()) launch_ready();
  } else if (!b.launched) {
    slot.add_(grad.reshape({-1}));
  } else {
    repeated_ = true;
  }
}

void GradientReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == buckets_[next_launch_].slots.size()) {
    auto& b = buckets_[next_launch_];
    std::vector<torch::Tensor> one{b.flat};
    b.pending = comm_->all_reduce_async(one);
    b.launched = true;
    ++next_launch_;
  }
}

}  // namespace sedensenet
