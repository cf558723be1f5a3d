// Each source file registers its functions on the addon's exports.
#pragma once
#include <napi.h>

namespace berth {
void InitObjects(Napi::Env env, Napi::Object exports);
void InitMaps(Napi::Env env, Napi::Object exports);
void InitIter(Napi::Env env, Napi::Object exports);
void InitTc(Napi::Env env, Napi::Object exports);
void InitNamespaces(Napi::Env env, Napi::Object exports);
void InitNotify(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);
}  // namespace berth
