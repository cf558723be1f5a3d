// Map element access by fd with Buffers for keys and values: the bytes are laid out by
// src/datapath/codec.ts (the one place that knows lb.h's layout in JS). Fast syscalls: sync.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "errors.h"
#include "exports.h"

namespace berth {
namespace {

struct MapShape {
  uint32_t type, key_size, value_size, max_entries, flags, id;
  char name[BPF_OBJ_NAME_LEN];
};

MapShape Shape(Napi::Env env, int fd) {
  bpf_map_info mi = {};
  uint32_t len = sizeof mi;
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(map)", errno);
  MapShape s{mi.type, mi.key_size, mi.value_size, mi.max_entries, mi.map_flags, mi.id, {}};
  memcpy(s.name, mi.name, sizeof s.name);
  return s;
}

bool IsPercpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Bytes of one value as the syscall sees it (per-CPU maps: one 8-aligned slot per possible CPU).
size_t ValueBytes(const MapShape &s) {
  if (!IsPercpu(s.type)) return s.value_size;
  int ncpu = libbpf_num_possible_cpus();
  return ((s.value_size + 7) / 8) * 8 * (ncpu > 0 ? ncpu : 1);
}

Napi::Buffer<uint8_t> Buf(const Napi::Value &v) { return v.As<Napi::Buffer<uint8_t>>(); }

std::string MapOp(const char *op, const MapShape &s) { return std::string(op) + " " + s.name; }

void CheckSize(Napi::Env env, const MapShape &s, const char *what, size_t got, size_t want) {
  if (got != want)
    ThrowErrno(env, std::string("map ") + s.name, EINVAL,
               std::string(what) + " is " + std::to_string(got) + " bytes, the map wants " + std::to_string(want));
}

// mapInfo(fd) -> { id, name, type, keySize, valueSize, valueBytes, maxEntries, flags }
Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  MapShape s = Shape(env, info[0].As<Napi::Number>().Int32Value());
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", s.id);
  o.Set("name", s.name);
  const char *tn = libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(s.type));
  o.Set("type", tn ? tn : "unknown");
  o.Set("keySize", s.key_size);
  o.Set("valueSize", s.value_size);
  o.Set("valueBytes", static_cast<double>(ValueBytes(s)));
  o.Set("maxEntries", s.max_entries);
  o.Set("flags", s.flags);
  return o;
}

// mapUpdate(fd, key, value, flags=BPF_ANY)
Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto key = Buf(info[1]);
  auto val = Buf(info[2]);
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value()) : uint64_t(BPF_ANY);
  // Sizes are checked BEFORE the syscall: the kernel reads key_size/value_size bytes from
  // these pointers whatever the Buffer's length, so a short Buffer would be overread.
  MapShape s = Shape(env, fd);
  CheckSize(env, s, "key", key.Length(), s.key_size);
  CheckSize(env, s, "value", val.Length(), ValueBytes(s));
  if (bpf_map_update_elem(fd, key.Data(), val.Data(), flags)) ThrowErrno(env, MapOp("bpf_map_update_elem", s), errno);
  return env.Undefined();
}

// mapDelete(fd, key) -> true if deleted, false if it was not there.
Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto key = Buf(info[1]);
  MapShape s = Shape(env, fd);
  CheckSize(env, s, "key", key.Length(), s.key_size);
  if (bpf_map_delete_elem(fd, key.Data())) {
    int err = errno;
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowErrno(env, MapOp("bpf_map_delete_elem", s), err);
  }
  return Napi::Boolean::New(env, true);
}

// mapLookup(fd, key) -> Buffer (valueBytes) or null.
Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto key = Buf(info[1]);
  MapShape s = Shape(env, fd);
  CheckSize(env, s, "key", key.Length(), s.key_size);
  auto out = Napi::Buffer<uint8_t>::New(env, ValueBytes(s));
  if (bpf_map_lookup_elem(fd, key.Data(), out.Data())) {
    int err = errno;
    if (err == ENOENT) return env.Null();
    ThrowErrno(env, MapOp("bpf_map_lookup_elem", s), err);
  }
  return out;
}

// mapDump(fd) -> { count, keys: Buffer(count*keySize), values: Buffer(count*valueBytes) }.
// Batched (one syscall per few thousand entries) where the map type supports it, else
// get_next_key + lookup. A concurrent writer may make a walk miss or repeat an entry; berth
// is the only writer and programs only touch counters and socket storage, never dumped to plan.
Napi::Value MapDump(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  MapShape s = Shape(env, fd);
  const size_t vb = ValueBytes(s);
  std::vector<uint8_t> keys, vals;
  uint32_t count = 0;

  bool batched = false;
  {
    const uint32_t chunk = 4096;
    std::vector<uint8_t> kbuf(size_t(chunk) * s.key_size), vbuf(size_t(chunk) * vb);
    std::vector<uint8_t> in(std::max<size_t>(s.key_size, 8)), out(std::max<size_t>(s.key_size, 8));
    bool first = true;
    for (int guard = 0; guard < 1 << 20; guard++) {
      uint32_t n = chunk;
      LIBBPF_OPTS(bpf_map_batch_opts, opts);
      int err = bpf_map_lookup_batch(fd, first ? nullptr : in.data(), out.data(), kbuf.data(), vbuf.data(), &n, &opts);
      int e = err ? errno : 0;
      if (err && e != ENOENT) {
        if (first && (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == 524 /* kernel ENOTSUPP */)) break;  // no batch ops
        ThrowErrno(env, MapOp("bpf_map_lookup_batch", s), e);
      }
      keys.insert(keys.end(), kbuf.begin(), kbuf.begin() + size_t(n) * s.key_size);
      vals.insert(vals.end(), vbuf.begin(), vbuf.begin() + size_t(n) * vb);
      count += n;
      first = false;
      batched = true;
      if (e == ENOENT) break;
      in = out;
    }
  }
  if (!batched) {
    keys.clear();
    vals.clear();
    count = 0;
    std::vector<uint8_t> cur(s.key_size), next(s.key_size), val(vb);
    bool have = false;
    for (uint32_t guard = 0; guard <= s.max_entries; guard++) {
      if (bpf_map_get_next_key(fd, have ? cur.data() : nullptr, next.data())) {
        if (errno == ENOENT) break;
        ThrowErrno(env, MapOp("bpf_map_get_next_key", s), errno);
      }
      if (bpf_map_lookup_elem(fd, next.data(), val.data()) == 0) {
        keys.insert(keys.end(), next.begin(), next.end());
        vals.insert(vals.end(), val.begin(), val.end());
        count++;
      } else if (errno != ENOENT) {
        ThrowErrno(env, MapOp("bpf_map_lookup_elem", s), errno);
      }
      cur = next;
      have = true;
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", count);
  o.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), keys.size()));
  o.Set("values", Napi::Buffer<uint8_t>::Copy(env, vals.data(), vals.size()));
  return o;
}

// The kernel has no batch ops for this map (or at all): the caller writes element by element.
bool NoBatchOps(int err) {
  return err == ENOTSUP || err == EOPNOTSUPP || err == 524 /* kernel ENOTSUPP */;
}

// { done, error, unsupported } of a batch syscall that was asked to do `count` elements and
// reported `n` (errno err, 0 on success).
Napi::Object BatchResult(Napi::Env env, const MapShape &s, const char *op, uint32_t count, uint32_t n, int err) {
  // A refusal before any element (no batch ops, bad flags) leaves count as we passed it; a
  // failure at element i reports i < count. So an error with n == count means none was written.
  if (err && n >= count) n = 0;
  Napi::Object o = Napi::Object::New(env);
  o.Set("done", err ? n : count);
  o.Set("error", err ? ErrnoError(env, MapOp(op, s), err, NoBatchOps(err) ? "no batch ops for this map" : "").Value() : env.Null());
  o.Set("unsupported", err != 0 && NoBatchOps(err));
  return o;
}

// mapUpdateBatch(fd, keys, values, count, flags=BPF_ANY) -> { done, error }
// Writes count elements IN ORDER with BPF_MAP_UPDATE_BATCH (one syscall, the kernel walks the
// elements one after another, so a reader sees them appear in this order). done = elements
// written; error (an Error with errno/code/syscall, returned, not thrown) when element `done`
// failed, e.g. E2BIG on a full map; unsupported when the kernel has no batch ops for this map
// (done 0; the kernel says ENOTSUPP, 524, which has no userspace errno name).
// Bad arguments (sizes that do not match the map) throw before any syscall.
Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto keys = Buf(info[1]);
  auto vals = Buf(info[2]);
  uint32_t count = info[3].As<Napi::Number>().Uint32Value();
  uint64_t flags = info.Length() > 4 && info[4].IsNumber() ? static_cast<uint64_t>(info[4].As<Napi::Number>().Int64Value()) : uint64_t(BPF_ANY);
  MapShape s = Shape(env, fd);
  CheckSize(env, s, "keys", keys.Length(), size_t(count) * s.key_size);
  CheckSize(env, s, "values", vals.Length(), size_t(count) * ValueBytes(s));
  uint32_t n = count;
  int err = 0;
  if (count > 0) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
    if (bpf_map_update_batch(fd, keys.Data(), vals.Data(), &n, &opts)) err = errno;
  }
  return BatchResult(env, s, "bpf_map_update_batch", count, n, err);
}

// mapDeleteBatch(fd, keys, count) -> { done, error }: as mapUpdateBatch, for deletions. A key
// that is not there is an error (ENOENT) for the batch, as for bpf_map_delete_elem.
Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  auto keys = Buf(info[1]);
  uint32_t count = info[2].As<Napi::Number>().Uint32Value();
  MapShape s = Shape(env, fd);
  CheckSize(env, s, "keys", keys.Length(), size_t(count) * s.key_size);
  uint32_t n = count;
  int err = 0;
  if (count > 0) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    if (bpf_map_delete_batch(fd, keys.Data(), &n, &opts)) err = errno;
  }
  return BatchResult(env, s, "bpf_map_delete_batch", count, n, err);
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "libbpf_num_possible_cpus", -n);
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

void InitMaps(Napi::Env env, Napi::Object exports) {
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo, "mapInfo"));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate, "mapUpdate"));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete, "mapDelete"));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup, "mapLookup"));
  exports.Set("mapDump", Napi::Function::New(env, MapDump, "mapDump"));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch, "mapUpdateBatch"));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch, "mapDeleteBatch"));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus, "numPossibleCpus"));
}

}  // namespace berth
