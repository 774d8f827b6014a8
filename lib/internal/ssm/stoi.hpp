// Short-time objective intelligibility of a processed (noisy or denoised)
// signal against its clean reference:
//   STOI  — Taal, Hendriks, Heusdens, Jensen, "An algorithm for intelligibility
//           prediction of time-frequency weighted noisy speech", IEEE TASLP 2011;
//   ESTOI — Jensen, Taal, "An algorithm for predicting the intelligibility of
//           speech masked by modulated noise maskers", IEEE TASLP 2016.
//
// Both follow the framing of the authors' MATLAB code (and of pystoi), so
// scores are comparable with published numbers:
//   1. resample both signals to 10 kHz (ssm::resample when rate != 10000);
//   2. frames of 256 samples, hop 128, Hann window (MATLAB's hanning(256));
//      frames of the clean signal more than 40 dB below its loudest frame are
//      dropped from both signals, the rest overlap-added back together;
//   3. STFT of the result: the same frames, 512-point FFT;
//   4. 15 one-third-octave bands from 150 Hz: band envelope = sqrt of the
//      summed bin powers;
//   5. segments of 30 frames (384 ms), one ending at every frame;
//   STOI:  per segment and band, the processed envelope is scaled to the
//          clean one's energy, clipped at clean * (1 + 10^(-beta/20)) with
//          beta = -15 dB, and correlated with the clean envelope; the score is
//          the mean correlation over segments and bands;
//   ESTOI: per segment, both (band, frame) matrices are normalised to zero
//          mean and unit norm along frames (rows) then along bands (columns);
//          the score is the mean over segments of sum(X .* Y) / 30.
// Scores are about 1 for identical signals and fall with distortion.
// Computation is in double.
//
// Differences from pystoi: pystoi resamples with an Octave-compatible
// polyphase filter (here: libsamplerate), and returns 1e-5 with a warning
// when fewer than 30 frames remain (here: ssm::Error). ESTOI skips pystoi's
// random 1e-16 dither; a constant envelope row or column contributes 0.
#pragma once
#include <cstddef>

#include "ssm/common.hpp"

namespace ssm {

// Throws ssm::Error unless n >= 1, rate >= 1, every sample is finite and at
// least 30 STFT frames remain after silent frames are dropped (about 0.4 s of
// speech).
double stoi(const float* clean,      // (n)
            const float* processed,  // (n)
            size_t n, int rate);

double estoi(const float* clean,      // (n)
             const float* processed,  // (n)
             size_t n, int rate);

}  // namespace ssm
