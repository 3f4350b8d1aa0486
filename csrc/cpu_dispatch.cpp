// Runtime choice of the SIMD kernel table (see cpu_kernels.h).
#include <atomic>
#include <cstring>

#include "cpu_kernels.h"

namespace lam_fast {
namespace cpu {
namespace {

struct Capabilities {
  const KernelTable* tables[3];
  const char* names[3];
  int count = 0;

  Capabilities() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
      add(&avx512::table);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
      add(&avx2::table);
#endif
    add(&base::table);
  }
  void add(const KernelTable* t) {
    tables[count] = t;
    names[count] = t->name;
    ++count;
  }
};

const Capabilities& capabilities() {
  static const Capabilities caps;
  return caps;
}

std::atomic<const KernelTable*> selected{nullptr};

}  // namespace

const KernelTable& kernels() {
  const KernelTable* t = selected.load(std::memory_order_acquire);
  return t != nullptr ? *t : *capabilities().tables[0];
}

const char* const* supported_capabilities(int* count) {
  *count = capabilities().count;
  return capabilities().names;
}

bool set_capability(const char* name) {
  const Capabilities& caps = capabilities();
  for (int i = 0; i < caps.count; ++i) {
    if (std::strcmp(caps.names[i], name) == 0) {
      selected.store(caps.tables[i], std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace cpu
}  // namespace lam_fast
