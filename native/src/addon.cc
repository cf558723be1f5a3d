// The addon's entry: registers every module's functions, plus the struct sizes and constants of
// bpf/lb.h so src/datapath/codec.ts can verify its layout against the C compiler's.
#include <napi.h>

#include "exports.h"
#include "lb.h"

namespace berth {

void InitLayout(Napi::Env env, Napi::Object exports) {
  Napi::Object sizes = Napi::Object::New(env);
  sizes.Set("svcKey", sizeof(struct berth_svc_key));
  sizes.Set("svcVal", sizeof(struct berth_svc_val));
  sizes.Set("backendKey", sizeof(struct berth_backend_key));
  sizes.Set("backend", sizeof(struct berth_backend));
  sizes.Set("skRevnat", sizeof(struct berth_sk_revnat));
  sizes.Set("skRevnatEnt", sizeof(struct berth_sk_revnat_ent));
  sizes.Set("counters", sizeof(struct berth_counters));
  sizes.Set("config", sizeof(struct berth_config));
  sizes.Set("destroyKey", sizeof(struct berth_destroy_key));
  sizes.Set("redir4Key", sizeof(struct berth_redir4_key));
  sizes.Set("redir6Key", sizeof(struct berth_redir6_key));
  sizes.Set("redirVal", sizeof(struct berth_redir_val));
  sizes.Set("flowKey", sizeof(struct berth_flow_key));
  sizes.Set("clientNets", sizeof(struct berth_client_nets));
  exports.Set("sizes", sizes);

  Napi::Object offs = Napi::Object::New(env);
  offs.Set("svcKeyPort", offsetof(struct berth_svc_key, port));
  offs.Set("svcKeyProto", offsetof(struct berth_svc_key, proto));
  offs.Set("svcKeyFamily", offsetof(struct berth_svc_key, family));
  offs.Set("svcKeySlot", offsetof(struct berth_svc_key, slot));
  offs.Set("svcKeyNet", offsetof(struct berth_svc_key, net));
  offs.Set("svcValCount", offsetof(struct berth_svc_val, count));
  offs.Set("svcValFlags", offsetof(struct berth_svc_val, flags));
  offs.Set("backendPort", offsetof(struct berth_backend, port));
  offs.Set("backendFamily", offsetof(struct berth_backend, family));
  offs.Set("skRevnatEntVip", offsetof(struct berth_sk_revnat_ent, vip_addr));
  offs.Set("skRevnatNext", offsetof(struct berth_sk_revnat, next));
  offs.Set("countersNoBackend", offsetof(struct berth_counters, no_backend));
  offs.Set("destroyKeyPort", offsetof(struct berth_destroy_key, port));
  offs.Set("destroyKeyFamily", offsetof(struct berth_destroy_key, family));
  offs.Set("redir4KeyPort", offsetof(struct berth_redir4_key, port));
  offs.Set("redir6KeyPort", offsetof(struct berth_redir6_key, port));
  exports.Set("offsets", offs);

  Napi::Object c = Napi::Object::New(env);
  c.Set("MAX_SERVICE_ENTRIES", BERTH_MAX_SERVICE_ENTRIES);
  c.Set("MAX_BACKENDS", BERTH_MAX_BACKENDS);
  c.Set("MAX_SERVICE_IDS", BERTH_MAX_SERVICE_IDS);
  c.Set("SK_REVNAT_SLOTS", BERTH_SK_REVNAT_SLOTS);
  c.Set("MAX_DESTROY", BERTH_MAX_DESTROY);
  c.Set("MAX_SLOTS", BERTH_MAX_SLOTS);
  c.Set("CLIENT_NETS", BERTH_CLIENT_NETS);
  c.Set("SVC_F_HOST_NETNS", BERTH_SVC_F_HOST_NETNS);
  c.Set("FAMILY_V4", BERTH_FAMILY_V4);
  c.Set("FAMILY_V6", BERTH_FAMILY_V6);
  exports.Set("constants", c);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitLayout(env, exports);
  InitObjects(env, exports);
  InitMaps(env, exports);
  InitIter(env, exports);
  InitTc(env, exports);
  InitNamespaces(env, exports);
  InitNotify(env, exports);
  InitMemory(env, exports);
  return exports;
}

}  // namespace berth

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return berth::Init(env, exports); }

NODE_API_MODULE(berth, InitAddon)
