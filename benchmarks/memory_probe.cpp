// A shared library that installs SEDenseNet's CPU tensor-memory counter in whatever process loads
// it. The Python reference benchmark loads it with ctypes after importing torch (Debian's
// python3-torch and libtorch-dev share one libc10), so both sides are measured the same way.
#include <sedensenet/util/memory.hpp>

#include <cstdint>

extern "C" {
void sedensenet_probe_install() { sedensenet::install_cpu_memory_tracking(); }
int64_t sedensenet_probe_current() { return sedensenet::detail::cpu_counter().current(); }
int64_t sedensenet_probe_peak() { return sedensenet::detail::cpu_counter().peak(); }
void sedensenet_probe_restart_peak() { sedensenet::detail::cpu_counter().restart_peak(); }
}
