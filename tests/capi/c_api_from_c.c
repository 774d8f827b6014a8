/* The C API used from C (compiled as C, not C++): the header must be valid C
 * and the functions callable without any C++ in the caller. */
#include <stddef.h>
#include <string.h>

#include "ssm/c_api.h"

/* Denoises in (n) in pieces of `piece` samples; 0 on success, or the step that failed. */
int c_denoise_in_pieces(const char* model, const float* in, float* out, int n, int piece) {
  ssm_denoiser* st = ssm_denoiser_create(model);
  int i;
  if (!st) return 1;
  if (ssm_denoiser_frame_size(st) <= 0 || ssm_denoiser_sample_rate(st) <= 0 || ssm_denoiser_latency(st) < 0) {
    ssm_denoiser_destroy(st);
    return 2;
  }
  for (i = 0; i < n; i += piece) {
    int m = n - i < piece ? n - i : piece;
    if (ssm_denoiser_process(st, out + i, in + i, m) != m) {
      ssm_denoiser_destroy(st);
      return 3;
    }
  }
  ssm_denoiser_destroy(st);
  return 0;
}

/* A bad path: NULL handle and a message naming the file. */
int c_create_fails_with_message(const char* bad_path) {
  ssm_denoiser* st = ssm_denoiser_create(bad_path);
  if (st) {
    ssm_denoiser_destroy(st);
    return 0;
  }
  return strstr(ssm_last_error(), bad_path) != NULL;
}
