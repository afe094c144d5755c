// N-API binding of the CPU engine. Every entry point validates its arguments and turns C++ exceptions
// into JavaScript errors; nothing here aborts the process. The flat parameter and gradient buffers are
// exposed as zero-copy Float32Arrays that keep the model alive.
#include <napi.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <memory>

#include "classifier.h"
#include "distance_sums.h"
#include "model.h"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

namespace {

using gm::i64;

#define GM_TRY try {
#define GM_CATCH(env)                                               \
  }                                                                 \
  catch (const Napi::Error&) {                                      \
    throw;                                                          \
  }                                                                 \
  catch (const std::bad_alloc&) {                                   \
    throw Napi::Error::New(env, "gm engine: out of memory");        \
  }                                                                 \
  catch (const std::exception& e) {                                 \
    throw Napi::Error::New(env, std::string("gm engine: ") + e.what()); \
  }

std::string get_string(const Napi::Object& o, const char* key, const std::string& def) {
  if (!o.Has(key) || o.Get(key).IsUndefined() || o.Get(key).IsNull()) return def;
  if (!o.Get(key).IsString()) throw std::invalid_argument(std::string("config.") + key + " must be a string");
  return o.Get(key).As<Napi::String>().Utf8Value();
}
double get_number(const Napi::Object& o, const char* key, double def, bool required = false) {
  if (!o.Has(key) || o.Get(key).IsUndefined() || o.Get(key).IsNull()) {
    if (required) throw std::invalid_argument(std::string("config.") + key + " is required");
    return def;
  }
  if (!o.Get(key).IsNumber()) throw std::invalid_argument(std::string("config.") + key + " must be a number");
  return o.Get(key).As<Napi::Number>().DoubleValue();
}

gm::Config parse_config(const Napi::Object& o) {
  gm::Config c;
  c.vocab_size = (i64)get_number(o, "vocab_size", 0, true);
  c.d_model = (i64)get_number(o, "d_model", 0, true);
  c.n_layer = (i64)get_number(o, "n_layer", 0, true);
  const std::string mixer = get_string(o, "mixer", "mamba2");
  if (mixer == "mamba2") c.mixer = gm::Mixer::Mamba2;
  else if (mixer == "mamba1") c.mixer = gm::Mixer::Mamba1;
  else throw std::invalid_argument("config.mixer must be \"mamba2\" or \"mamba1\", got \"" + mixer + "\"");
  const std::string comb = get_string(o, "combine", "gate");
  if (comb == "gate") c.combine = gm::Combine::Gate;
  else if (comb == "mean") c.combine = gm::Combine::Mean;
  else if (comb == "sum") c.combine = gm::Combine::Sum;
  else if (comb == "concat") c.combine = gm::Combine::Concat;
  else if (comb == "unidirectional") c.combine = gm::Combine::Unidirectional;
  else throw std::invalid_argument("config.combine must be gate, mean, sum, concat or unidirectional, got \"" + comb + "\"");
  c.d_state = (i64)get_number(o, "d_state", c.mixer == gm::Mixer::Mamba2 ? 64 : 16);
  c.headdim = (i64)get_number(o, "headdim", 64);
  c.expand = (i64)get_number(o, "expand", 2);
  c.d_conv = (i64)get_number(o, "d_conv", 4);
  c.dt_rank = (i64)get_number(o, "dt_rank", (double)((c.d_model + 15) / 16));
  c.norm_eps = get_number(o, "norm_eps", 1e-5);
  c.pad_token_id = (std::int32_t)get_number(o, "pad_token_id", 1);
  c.chunk_size = (i64)get_number(o, "chunk_size", 64);
  return c;
}

Napi::Int32Array int32_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw std::invalid_argument(std::string(what) + " must be an Int32Array");
  return info[i].As<Napi::Int32Array>();
}
i64 int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw std::invalid_argument(std::string(what) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != (double)(i64)v) throw std::invalid_argument(std::string(what) + " must be an integer");
  return (i64)v;
}

Napi::Array tensor_table(Napi::Env env, const std::vector<gm::TensorInfo>& tensors) {
  Napi::Array arr = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); i++) {
    const gm::TensorInfo& t = tensors[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    Napi::Array shape = Napi::Array::New(env, t.shape.size());
    for (size_t j = 0; j < t.shape.size(); j++) shape.Set((uint32_t)j, Napi::Number::New(env, (double)t.shape[j]));
    o.Set("shape", shape);
    o.Set("offset", Napi::Number::New(env, (double)t.offset));
    o.Set("numel", Napi::Number::New(env, (double)t.numel));
    o.Set("decay", Napi::Boolean::New(env, t.decay));
    arr.Set((uint32_t)i, o);
  }
  return arr;
}

// A zero-copy Float32Array over v that keeps its owner alive.
template <typename Owner>
Napi::Float32Array shared_view(Napi::Env env, std::vector<float>* v, const std::shared_ptr<Owner>& owner) {
  auto* keep = new std::shared_ptr<Owner>(owner);
  auto ab = Napi::ArrayBuffer::New(env, v->data(), v->size() * sizeof(float),
                                   [](Napi::Env, void*, std::shared_ptr<Owner>* k) { delete k; }, keep);
  return Napi::Float32Array::New(env, v->size(), ab, 0);
}

gm::AdamWOptions parse_adamw(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw std::invalid_argument("adamw(options): options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  gm::AdamWOptions a;
  a.lr = get_number(o, "lr", 0, true);
  a.beta1 = get_number(o, "beta1", 0.9);
  a.beta2 = get_number(o, "beta2", 0.999);
  a.eps = get_number(o, "eps", 1e-8);
  a.weight_decay = get_number(o, "weightDecay", 0);
  a.step = (long)get_number(o, "step", 0, true);
  a.grad_scale = get_number(o, "gradScale", 1.0);
  if (a.step < 1) throw std::invalid_argument("adamw: step must be >= 1");
  return a;
}

Napi::Float32Array float32_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw std::invalid_argument(std::string(what) + " must be a Float32Array");
  return info[i].As<Napi::Float32Array>();
}

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {InstanceMethod("tensorTable", &Engine::TensorTable),
                        InstanceMethod("buffer", &Engine::Buffer),
                        InstanceMethod("init", &Engine::Init),
                        InstanceMethod("forward", &Engine::Forward),
                        InstanceMethod("logits", &Engine::Logits),
                        InstanceMethod("hidden", &Engine::Hidden),
                        InstanceMethod("argmaxLogits", &Engine::ArgmaxLogits),
                        InstanceMethod("loss", &Engine::Loss),
                        InstanceMethod("zeroGrad", &Engine::ZeroGrad),
                        InstanceMethod("gradNorm", &Engine::GradNorm),
                        InstanceMethod("adamw", &Engine::AdamW),
                        InstanceMethod("activationBytes", &Engine::ActivationBytes)});
  }

  explicit Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (info.Length() < 1 || !info[0].IsObject()) throw std::invalid_argument("Engine(config): config must be an object");
    model_ = std::make_shared<gm::Model>(parse_config(info[0].As<Napi::Object>()));
    GM_CATCH(env)
  }

 private:
  std::shared_ptr<gm::Model> model_;
  i64 B_ = 0, L_ = 0;

  Napi::Value TensorTable(const Napi::CallbackInfo& info) { return tensor_table(info.Env(), model_->tensors); }

  // buffer("params" | "grads" | "adam_m" | "adam_v") -> Float32Array over the flat buffer.
  Napi::Value Buffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (info.Length() < 1 || !info[0].IsString()) throw std::invalid_argument("buffer(name): name must be a string");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    std::vector<float>* v = name == "params" ? &model_->params
                            : name == "grads" ? &model_->grads
                            : name == "adam_m" ? &model_->adam_m
                            : name == "adam_v" ? &model_->adam_v
                                               : nullptr;
    if (!v) throw std::invalid_argument("buffer(name): unknown buffer \"" + name + "\"");
    return shared_view(env, v, model_);
    GM_CATCH(env)
  }

  Napi::Value Init(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    model_->init((std::uint64_t)int_arg(info, 0, "seed"));
    return env.Undefined();
    GM_CATCH(env)
  }

  // forward(tokens: Int32Array, lengths: Int32Array, batch, length)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    auto tokens = int32_arg(info, 0, "tokens");
    auto lengths = int32_arg(info, 1, "lengths");
    const i64 B = int_arg(info, 2, "batch"), L = int_arg(info, 3, "length");
    if (B < 1 || L < 1) throw std::invalid_argument("batch and length must be positive");
    if ((i64)tokens.ElementLength() != B * L)
      throw std::invalid_argument("tokens has " + std::to_string(tokens.ElementLength()) + " elements, expected batch x length = " + std::to_string(B * L));
    if ((i64)lengths.ElementLength() != B)
      throw std::invalid_argument("lengths has " + std::to_string(lengths.ElementLength()) + " elements, expected batch = " + std::to_string(B));
    model_->forward(tokens.Data(), lengths.Data(), B, L);
    B_ = B;
    L_ = L;
    return env.Undefined();
    GM_CATCH(env)
  }

  Napi::Value Logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (B_ == 0) throw std::logic_error("logits: call forward first");
    auto out = Napi::Float32Array::New(env, (size_t)(B_ * L_ * model_->cfg.vocab_size));
    model_->logits(out.Data());
    return out;
    GM_CATCH(env)
  }

  Napi::Value ArgmaxLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (B_ == 0) throw std::logic_error("argmaxLogits: call forward first");
    auto out = Napi::Int32Array::New(env, (size_t)(B_ * L_));
    model_->argmax_logits(out.Data());
    return out;
    GM_CATCH(env)
  }

  Napi::Value Hidden(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (B_ == 0) throw std::logic_error("hidden: call forward first");
    const size_t n = (size_t)(B_ * L_ * model_->cfg.d_model);
    auto out = Napi::Float32Array::New(env, n);
    std::copy(model_->hidden(), model_->hidden() + n, out.Data());
    return out;
    GM_CATCH(env)
  }

  // loss(targets: Int32Array, scale, backward, hiddenGrad?: Float32Array) -> { loss, count }
  Napi::Value Loss(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (B_ == 0) throw std::logic_error("loss: call forward first");
    auto targets = int32_arg(info, 0, "targets");
    if ((i64)targets.ElementLength() != B_ * L_)
      throw std::invalid_argument("targets has " + std::to_string(targets.ElementLength()) + " elements, expected " + std::to_string(B_ * L_));
    const double scale = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 1.0;
    const bool backward = info.Length() > 2 && info[2].ToBoolean().Value();
    const float* hidden_grad = nullptr;
    if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
      if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw std::invalid_argument("hiddenGrad must be a Float32Array");
      auto hg = info[3].As<Napi::Float32Array>();
      if ((i64)hg.ElementLength() != B_ * L_ * model_->cfg.d_model)
        throw std::invalid_argument("hiddenGrad has " + std::to_string(hg.ElementLength()) + " elements, expected batch x length x d_model = " + std::to_string(B_ * L_ * model_->cfg.d_model));
      hidden_grad = hg.Data();
    }
    auto r = model_->loss(targets.Data(), scale, backward, hidden_grad);
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", Napi::Number::New(env, r.loss));
    o.Set("count", Napi::Number::New(env, (double)r.count));
    return o;
    GM_CATCH(env)
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    model_->zero_grad();
    return info.Env().Undefined();
  }

  Napi::Value GradNorm(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), model_->grad_norm());
  }

  // adamw({lr, beta1, beta2, eps, weightDecay, step, gradScale})
  Napi::Value AdamW(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    gm::AdamWOptions a = parse_adamw(info);
    model_->adamw(a);
    return env.Undefined();
    GM_CATCH(env)
  }

  Napi::Value ActivationBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), (double)model_->activation_bytes());
  }
};

// The fine-tuning head (classifier.h): same conventions as Engine.
class Head : public Napi::ObjectWrap<Head> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Head",
                       {InstanceMethod("tensorTable", &Head::TensorTable),
                        InstanceMethod("bufferTable", &Head::BufferTable),
                        InstanceMethod("buffer", &Head::Buffer),
                        InstanceMethod("init", &Head::Init),
                        InstanceMethod("forward", &Head::Forward),
                        InstanceMethod("loss", &Head::Loss),
                        InstanceMethod("backward", &Head::Backward),
                        InstanceMethod("dx", &Head::Dx),
                        InstanceMethod("probs", &Head::Probs),
                        InstanceMethod("zeroGrad", &Head::ZeroGrad),
                        InstanceMethod("gradNorm", &Head::GradNorm),
                        InstanceMethod("adamw", &Head::AdamW)});
  }

  explicit Head(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Head>(info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (info.Length() < 1 || !info[0].IsObject()) throw std::invalid_argument("Head(config): config must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    gm::ClassifierConfig c;
    c.d_in = (i64)get_number(o, "d_in", 0, true);
    c.n_classes = (i64)get_number(o, "n_classes", 0, true);
    c.hidden = (i64)get_number(o, "hidden", 512);
    c.n_layers = (i64)get_number(o, "n_layers", 4);
    c.dropout = get_number(o, "dropout", 0.5);
    c.negative_slope = get_number(o, "negative_slope", 0.1);
    c.bn_eps = get_number(o, "bn_eps", 1e-5);
    c.bn_momentum = get_number(o, "bn_momentum", 0.1);
    head_ = std::make_shared<gm::Classifier>(c);
    GM_CATCH(env)
  }

 private:
  std::shared_ptr<gm::Classifier> head_;

  Napi::Value TensorTable(const Napi::CallbackInfo& info) { return tensor_table(info.Env(), head_->tensors); }
  Napi::Value BufferTable(const Napi::CallbackInfo& info) { return tensor_table(info.Env(), head_->buffer_tensors); }

  // buffer("params" | "grads" | "adam_m" | "adam_v" | "running")
  Napi::Value Buffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    if (info.Length() < 1 || !info[0].IsString()) throw std::invalid_argument("buffer(name): name must be a string");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    std::vector<float>* v = name == "params" ? &head_->params
                            : name == "grads" ? &head_->grads
                            : name == "adam_m" ? &head_->adam_m
                            : name == "adam_v" ? &head_->adam_v
                            : name == "running" ? &head_->buffers
                                               : nullptr;
    if (!v) throw std::invalid_argument("buffer(name): unknown buffer \"" + name + "\"");
    return shared_view(env, v, head_);
    GM_CATCH(env)
  }

  Napi::Value Init(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    head_->init((std::uint64_t)int_arg(info, 0, "seed"));
    return env.Undefined();
    GM_CATCH(env)
  }

  // forward(x: Float32Array [B, d_in], batch, train, seed) -> logits Float32Array [B, C] (a copy)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    auto x = float32_arg(info, 0, "x");
    const i64 B = int_arg(info, 1, "batch");
    const bool train = info.Length() > 2 && info[2].ToBoolean().Value();
    const i64 seed = info.Length() > 3 ? int_arg(info, 3, "seed") : 0;
    if (B < 1 || (i64)x.ElementLength() != B * head_->cfg.d_in)
      throw std::invalid_argument("x has " + std::to_string(x.ElementLength()) + " elements, expected batch x d_in = " + std::to_string(B * head_->cfg.d_in));
    const float* logits = head_->forward(x.Data(), B, train, (std::uint64_t)seed);
    auto out = Napi::Float32Array::New(env, (size_t)(B * head_->cfg.n_classes));
    std::copy(logits, logits + B * head_->cfg.n_classes, out.Data());
    return out;
    GM_CATCH(env)
  }

  // loss(targets: Int32Array [B], classWeight: Float32Array [C] | null, scale, backward) -> number
  Napi::Value Loss(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    auto targets = int32_arg(info, 0, "targets");
    if ((i64)targets.ElementLength() != head_->batch())
      throw std::invalid_argument("targets has " + std::to_string(targets.ElementLength()) + " elements, expected the batch size " + std::to_string(head_->batch()));
    const float* cw = nullptr;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
      auto w = float32_arg(info, 1, "classWeight");
      if ((i64)w.ElementLength() != head_->cfg.n_classes) throw std::invalid_argument("classWeight must have one entry per class");
      cw = w.Data();
    }
    const double scale = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 1.0;
    const bool backward = info.Length() > 3 && info[3].ToBoolean().Value();
    return Napi::Number::New(env, head_->loss(targets.Data(), cw, scale, backward));
    GM_CATCH(env)
  }

  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    auto d = float32_arg(info, 0, "dlogits");
    if ((i64)d.ElementLength() != head_->batch() * head_->cfg.n_classes) throw std::invalid_argument("dlogits must be batch x n_classes");
    head_->backward(d.Data());
    return env.Undefined();
    GM_CATCH(env)
  }

  Napi::Value Dx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const size_t n = (size_t)(head_->batch() * head_->cfg.d_in);
    auto out = Napi::Float32Array::New(env, n);
    std::copy(head_->dx(), head_->dx() + n, out.Data());
    return out;
  }

  Napi::Value Probs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const size_t n = (size_t)(head_->batch() * head_->cfg.n_classes);
    auto out = Napi::Float32Array::New(env, n);
    std::copy(head_->probs(), head_->probs() + n, out.Data());
    return out;
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    head_->zero_grad();
    return info.Env().Undefined();
  }
  Napi::Value GradNorm(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), head_->grad_norm()); }
  Napi::Value AdamW(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GM_TRY
    head_->adamw(parse_adamw(info));
    return env.Undefined();
    GM_CATCH(env)
  }
};

// distanceSums(x: Float32Array [n, d], n, d, labels: Int32Array [n], k) -> Float64Array [n, k]
Napi::Value DistanceSums(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  GM_TRY
  auto x = float32_arg(info, 0, "x");
  const i64 n = int_arg(info, 1, "n"), d = int_arg(info, 2, "d");
  auto labels = int32_arg(info, 3, "labels");
  const i64 k = int_arg(info, 4, "k");
  if (n < 0 || d < 1 || k < 1) throw std::invalid_argument("distanceSums: n >= 0, d >= 1 and k >= 1 are required");
  if ((i64)x.ElementLength() != n * d) throw std::invalid_argument("distanceSums: x must hold n x d values");
  if ((i64)labels.ElementLength() != n) throw std::invalid_argument("distanceSums: labels must hold n values");
  for (i64 i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= k) throw std::invalid_argument("distanceSums: label " + std::to_string(labels[i]) + " outside [0, k)");
  auto out = Napi::Float64Array::New(env, (size_t)(n * k));
  gm::distance_sums(out.Data(), x.Data(), n, d, labels.Data(), k);
  return out;
  GM_CATCH(env)
}

Napi::Value MaxThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), gm::max_threads()); }

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int n = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  if (n < 1) throw Napi::Error::New(info.Env(), "gm engine: setThreads(n) needs n >= 1");
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  openblas_set_num_threads(n);
  return info.Env().Undefined();
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", Engine::Define(env));
  exports.Set("Head", Head::Define(env));
  exports.Set("maxThreads", Napi::Function::New(env, MaxThreads));
  exports.Set("distanceSums", Napi::Function::New(env, DistanceSums));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("backend", Napi::String::New(env, "cpu"));
  return exports;
}

}  // namespace

NODE_API_MODULE(gm_native, InitModule)
