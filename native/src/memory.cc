// mallocTrim: hand the C heap's free memory back to the kernel (glibc malloc_trim(3)).
//
// Why: berthd's cold start at 10,000 services x 4 leaves ~27 MB of freed but resident memory in
// glibc's main heap ([heap] in /proc/PID/smaps: ~30 MB at ready against ~3 MB at 10 services):
// node's HTTP and JSON buffers of the 40,000-container Docker list and the map-write batches live
// there and are freed, but glibc returns the top of the heap only when the free block at its end
// exceeds M_TRIM_THRESHOLD, and never the holes below it. malloc_trim(0) releases both (it
// madvises free pages inside the heap too). Measured by attaching gdb to berthd when ready and
// calling malloc_trim(0): [heap] 30.6 -> 4.6 MB, RSS 240 -> 213 MB.
#include <napi.h>

#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(BERTH_HAVE_V8)
#include <v8.h>
#endif

#include "exports.h"

namespace berth {
namespace {

// mallocTrim() -> true when memory was released, false when none was or the C library has no
// malloc_trim (musl, other libcs: nothing to do).
Napi::Value MallocTrim(const Napi::CallbackInfo &info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// mallocLimitArenas(arenaMax, trimThresholdBytes): glibc mallopt(M_ARENA_MAX) and
// mallopt(M_TRIM_THRESHOLD), for berthd's first lines (util/gc.ts limitCHeapArenas says why).
// true when glibc took both; false on another C library. Throws TypeError for a non-positive or
// non-integer argument.
Napi::Value MallocLimitArenas(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  for (size_t i = 0; i < 2; i++) {
    if (info.Length() <= i || !info[i].IsNumber()) {
      throw Napi::TypeError::New(env, "mallocLimitArenas(arenaMax, trimThresholdBytes): two numbers");
    }
    double v = info[i].As<Napi::Number>().DoubleValue();
    if (!(v >= 1 && v <= 1073741824 && v == static_cast<double>(static_cast<int>(v)))) {
      throw Napi::TypeError::New(env, std::string(i == 0 ? "arenaMax" : "trimThresholdBytes") + " must be an integer in 1..2^30");
    }
  }
#if defined(__GLIBC__)
  bool ok = mallopt(M_ARENA_MAX, info[0].As<Napi::Number>().Int32Value()) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, info[1].As<Napi::Number>().Int32Value()) == 1 && ok;
  return Napi::Boolean::New(env, ok);
#else
  return Napi::Boolean::New(env, false);
#endif
}

#if defined(BERTH_HAVE_V8)
// v8MemoryPressure: one memory-reducing full collection, synchronously (V8's
// Isolate::MemoryPressureNotification(kCritical) from the isolate's own thread; src/heap/heap.cc
// CheckMemoryPressure -> CollectGarbageOnMemoryPressure).
//
// Why: a collection flagged to reduce memory is the only one after which V8 shrinks its young
// generation (Heap::ReduceNewSpaceSize: semi-spaces back to their initial 1 MB) and it compacts
// fragmented old-space pages too. gc() from --expose-gc is a plain full collection: after it
// berthd at 10,000 services x 4 kept 27 MB of empty semi-space committed until V8's memory
// reducer ran by itself ~28 s later. Node-API offers no way to ask for it, hence V8's own API
// (node's headers; CMakeLists.txt builds this only when they match the running node's V8).
// LowMemoryNotification does the same with at least two full collections and drops the
// compilation cache: measured ~0.6 s of CPU at that size against ~0.37 s for this, same RSS.
Napi::Value V8MemoryPressure(const Napi::CallbackInfo &info) {
  v8::Isolate *isolate = v8::Isolate::GetCurrent();
  if (isolate == nullptr) return Napi::Boolean::New(info.Env(), false);
  isolate->MemoryPressureNotification(v8::MemoryPressureLevel::kCritical);
  return Napi::Boolean::New(info.Env(), true);
}
#endif

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim, "mallocTrim"));
  exports.Set("mallocLimitArenas", Napi::Function::New(env, MallocLimitArenas, "mallocLimitArenas"));
#if defined(BERTH_HAVE_V8)
  exports.Set("v8MemoryPressure", Napi::Function::New(env, V8MemoryPressure, "v8MemoryPressure"));
#endif
}

}  // namespace berth
