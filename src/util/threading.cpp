// Per-thread intra-op setting for data-loading workers (compiled with OpenMP when LibTorch uses
// it; see sedensenet/data/codec.hpp).
#include <ATen/Parallel.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "sedensenet/data/codec.hpp"

namespace sedensenet::detail {

void use_single_intra_op_thread() {
  // ATen initialises a thread's OpenMP thread count lazily, from the global setting, at its first
  // parallel call; initialise first so that our setting is not overwritten afterwards.
  at::internal::lazy_init_num_threads();
#if defined(_OPENMP)
  omp_set_num_threads(1);
#endif
}

}  // namespace sedensenet::detail
