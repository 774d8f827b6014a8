/* A small C API for embedding the denoiser (rnnoise / whisper.cpp style): an
 * opaque handle, float samples (mono at the model's rate, or any rate and
 * channel count with ssm_denoiser_create_at), any number of frames per call. No C++ exception crosses it: failures return NULL or -1
 * and ssm_last_error() says why.
 *
 *   ssm_denoiser* st = ssm_denoiser_create(NULL);   // NULL = built-in default
 *   if (!st) { fprintf(stderr, "%s\n", ssm_last_error()); ... }
 *   ssm_denoiser_process(st, out, in, n);           // in and out may alias
 *   ssm_denoiser_destroy(st);
 *
 * Threading: one handle is used by one thread at a time; process() runs on
 * the calling thread, allocates nothing and takes no lock, so it may be
 * called from an audio callback. create() and destroy() allocate. The
 * library never changes the process's BLAS thread count; an audio host that
 * wants the matrix products on its own thread alone sets
 * OPENBLAS_NUM_THREADS=1 (the ssm command-line tool does the same). */
#ifndef SSM_C_API_H
#define SSM_C_API_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssm_denoiser ssm_denoiser;

/* Loads a model (.safetensors) or, for NULL or "", the built-in default
 * denoiser (the shipped weights, compiled in; $SSM_DENOISER_MODEL names
 * another file). Mono at the model's rate. Returns NULL on failure (see
 * ssm_last_error()); a missing or unreadable model is a failure naming it. */
ssm_denoiser* ssm_denoiser_create(const char* model_path_or_null);

/* The same for audio at `rate` Hz with `channels` interleaved channels:
 * converted to the model's rate and back inside, every channel denoised with
 * its own state. */
ssm_denoiser* ssm_denoiser_create_at(const char* model_path_or_null, int rate, int channels);

/* Samples per call that the model processes in one pass; process() takes any
 * count, but calls of this many samples are the cheapest per sample. */
int ssm_denoiser_frame_size(const ssm_denoiser* st);

/* The rate (Hz) the samples must have, and their interleaved channels. */
int ssm_denoiser_sample_rate(const ssm_denoiser* st);
int ssm_denoiser_channels(const ssm_denoiser* st);

/* The latency in frames (the model's lookahead and frame wait, plus what the
   rate converters hold back): out[t] estimates the clean in[t - latency]. */
int ssm_denoiser_latency(const ssm_denoiser* st);

/* Denoises n frames: out[0..n) from in[0..n) (n * channels floats each,
 * interleaved), continuing from the state of earlier calls. Non-finite inputs
 * are taken as 0 (silence) so the state survives them; this is the rule of
 * every entry point (the CLI, the plugin). Returns n, or -1 on a bad argument. */
int ssm_denoiser_process(ssm_denoiser* st, float* out, const float* in, int n);

/* The most the denoiser may attenuate any sound, in dB (DeepFilterNet's
 * atten_lim_db): the input is mixed back at 10^(-db/20). 0 = no limit (the
 * default). Returns 0, or -1 for a null handle or a negative limit. */
int ssm_denoiser_set_attenuation_limit(ssm_denoiser* st, float db);

/* Dry/wet: the share of the denoised signal, 0..1 (1, the default = denoised
 * only; 0 = the input, delayed by the latency). Returns 0, or -1. */
int ssm_denoiser_set_mix(ssm_denoiser* st, float wet);

/* Forgets the past: the next process() starts from silence. */
void ssm_denoiser_reset(ssm_denoiser* st);

/* NULL is allowed. */
void ssm_denoiser_destroy(ssm_denoiser* st);

/* The message of this thread's last failure, "" when there was none. */
const char* ssm_last_error(void);

/* The library's version, "MAJOR.MINOR.PATCH". */
const char* ssm_version(void);

#ifdef __cplusplus
}  /* extern "C" */

#include <stdexcept>
#include <string>

namespace ssm {

/* RAII owner of an ssm_denoiser; throws std::runtime_error with the library's
 * message when creation fails. */
class Denoiser {
 public:
  explicit Denoiser(const char* model_path = nullptr) : st_(ssm_denoiser_create(model_path)) {
    if (!st_) throw std::runtime_error(ssm_last_error());
  }
  explicit Denoiser(const std::string& model_path) : Denoiser(model_path.c_str()) {}
  ~Denoiser() { ssm_denoiser_destroy(st_); }
  Denoiser(const Denoiser&) = delete;
  Denoiser& operator=(const Denoiser&) = delete;
  Denoiser(Denoiser&& o) noexcept : st_(o.st_) { o.st_ = nullptr; }
  Denoiser& operator=(Denoiser&& o) noexcept {
    if (this != &o) {
      ssm_denoiser_destroy(st_);
      st_ = o.st_;
      o.st_ = nullptr;
    }
    return *this;
  }

  int frame_size() const { return ssm_denoiser_frame_size(st_); }
  int channels() const { return ssm_denoiser_channels(st_); }
  void set_attenuation_limit(float db) {
    if (ssm_denoiser_set_attenuation_limit(st_, db) < 0) throw std::runtime_error(ssm_last_error());
  }
  void set_mix(float wet) {
    if (ssm_denoiser_set_mix(st_, wet) < 0) throw std::runtime_error(ssm_last_error());
  }
  int sample_rate() const { return ssm_denoiser_sample_rate(st_); }
  int latency() const { return ssm_denoiser_latency(st_); }
  void process(float* out, const float* in, int n) {
    if (ssm_denoiser_process(st_, out, in, n) < 0) throw std::runtime_error(ssm_last_error());
  }
  void reset() { ssm_denoiser_reset(st_); }
  ssm_denoiser* get() const { return st_; }

 private:
  ssm_denoiser* st_;
};

}  // namespace ssm
#endif

#endif /* SSM_C_API_H */
