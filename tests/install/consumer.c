/* Uses an installed ssm through its C API only:
 *   consumer MODEL_FILE
 * checks that the built-in denoiser (ssm_denoiser_create(NULL)) is the model
 * in MODEL_FILE (the installed copy of the shipped weights), sample for
 * sample, and that a missing model fails with a message naming it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <ssm/c_api.h>

#define N 4000

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: consumer MODEL_FILE\n");
    return 2;
  }
  static float in[N], a[N], b[N];
  unsigned s = 12345u;
  for (int i = 0; i < N; ++i) {
    s = s * 1664525u + 1013904223u;
    in[i] = 0.3f * sinf(0.05f * (float)i) + 0.05f * ((float)(s >> 8) / 16777216.0f - 0.5f);
  }
  ssm_denoiser* builtin = ssm_denoiser_create(NULL);
  ssm_denoiser* file = ssm_denoiser_create(argv[1]);
  if (!builtin || !file) {
    fprintf(stderr, "consumer: create failed: %s\n", ssm_last_error());
    return 1;
  }
  if (ssm_denoiser_process(builtin, a, in, N) != N || ssm_denoiser_process(file, b, in, N) != N) {
    fprintf(stderr, "consumer: process failed: %s\n", ssm_last_error());
    return 1;
  }
  double diff = 0, energy = 0;
  for (int i = 0; i < N; ++i) {
    diff = fmax(diff, fabs((double)a[i] - b[i]));
    energy += (double)a[i] * a[i];
  }
  printf("consumer: ssm %s, rate %d Hz, latency %d, max |built-in - file| = %g, output energy %g\n", ssm_version(),
         ssm_denoiser_sample_rate(builtin), ssm_denoiser_latency(builtin), diff, energy);
  ssm_denoiser_destroy(builtin);
  ssm_denoiser_destroy(file);
  if (diff != 0 || !(energy > 0)) {
    fprintf(stderr, "consumer: the built-in denoiser is not the shipped model\n");
    return 1;
  }
  const char* missing = "/nonexistent/denoiser.safetensors";
  if (ssm_denoiser_create(missing) != NULL || strstr(ssm_last_error(), missing) == NULL) {
    fprintf(stderr, "consumer: a missing model did not fail with its name: '%s'\n", ssm_last_error());
    return 1;
  }
  return 0;
}
