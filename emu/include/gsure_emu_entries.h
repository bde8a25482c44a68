// gsure_emu_entries.h: the entry table of one host-compiled kernel module. emu/build appends
//   GSURE_EMU_ENTRY(name) ...  for every `extern "C"` kernel of the .cu file
// after the kernel source, and this header turns each into a KernelEntry whose trampoline unpacks
// cuLaunchKernel's `void** kernelParams` into the kernel's typed arguments; the parameter sizes come from
// the C++ signature and are checked against the PTX's .param list when the module is loaded.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../src/block.h"

namespace gsure_emu {

template <typename F> struct Signature;
template <typename... A> struct Signature<void (*)(A...)> {
  static constexpr int count = sizeof...(A);
  static constexpr uint32_t sizes[sizeof...(A) + 1] = {(uint32_t)sizeof(A)..., 0};
  static constexpr bool pointers[sizeof...(A) + 1] = {std::is_pointer_v<A>..., false};
  template <void (*F)(A...), size_t... I>
  static void call(void* const* params, std::index_sequence<I...>) {
    F(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
  }
  template <void (*F)(A...)> static void trampoline(void* const* params) {
    call<F>(params, std::index_sequence_for<A...>{});
  }
};

}  // namespace gsure_emu

#define GSURE_EMU_ENTRY(name)                                                                      \
  {#name, &gsure_emu::Signature<decltype(&name)>::trampoline<&name>,                               \
   gsure_emu::Signature<decltype(&name)>::count, gsure_emu::Signature<decltype(&name)>::sizes,          \
   gsure_emu::Signature<decltype(&name)>::pointers},
