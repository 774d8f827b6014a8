// On-the-fly training examples for the denoiser: clean speech + noise at a
// random SNR and level, each example a pure function of (seed, index) so a
// run can be reproduced and any example regenerated on its own.
//
// One example of T samples, in the order the random draws are made:
//   1. speech: a uniformly chosen clip (each equally likely, whatever its
//      length); when speed_min < speed_max, a speed factor r drawn
//      log-uniformly from that range (r > 1 faster and higher, as a tape
//      played fast: a crude change of speaker, since pitch and formants move
//      together); a uniform segment of it that plays for T samples at r, or,
//      when the clip is shorter, the whole clip at a uniform offset with
//      zeros around it; or, with join_clips, the clip and those after it in
//      the list (a folder's are read in order: the same speaker's, mostly),
//      a pause uniform in [join_pause_min_s, join_pause_max_s] between each,
//      as long as the span needs, and a uniform segment of that. At r != 1 the clip is read between its samples by a
//      windowed-sinc interpolator whose cutoff is min(1, 1/r) times Nyquist
//      (no aliasing when sped up);
//   2. noise: a source drawn with the configured weights — a uniform
//      T-sample segment of a recorded noise clip (looped when shorter), or
//      one of the synthesized kinds of ssm/noise.hpp with parameters drawn
//      from the seed (babble from the other speech clips);
//   3. noise colouring: a low-pass and/or a high-pass on the noise alone;
//   4. channel colouring: a low-pass and/or a high-pass on speech and noise
//      alike (a microphone's response); the clean target is coloured too, so
//      the model is not asked to undo it;
//   5. SNR uniform in [snr_min_db, snr_max_db]:
//        SNR = 10 log10(active_mean_square(speech) / mean_square(noise))
//      speech measured on its active frames (ssm/noise.hpp), noise over all T;
//   6. level uniform in [level_min_dbfs, level_max_dbfs] for the RMS of the
//      mixture (0 dBFS = RMS 1), lowered where needed so that no sample of
//      noisy or clean exceeds max_peak in magnitude.
// Augmentations of what real microphones and rooms do, each drawn from a
// second random stream of the same (seed, index), so that the steps above
// draw the same values whatever these are set to:
//   a. silence (silence_prob): noisy = clean = 0, nothing else drawn;
//   b. no speech (noise_only_prob): the speech segment is zeroed;
//   c. a room (reverb_prob): the speech goes through a synthetic impulse
//      response (ssm/noise.hpp; RT60 log-uniform in [rt60_min_s, rt60_max_s],
//      direct-to-reverberant ratio uniform in [drr_min_db, drr_max_db]); the
//      clean target keeps the direct path and the first early_ms of it;
//   d. device colouring (eq_prob): 1 to 3 peaking filters, each +-eq_max_db
//      at a log-uniform 100 Hz .. 0.4 rate, on speech, noise and target alike
//      (applied after step 4);
//   e. clipping (clipping_prob): after step 6, the noisy input is hard-clipped
//      1 .. 12 dB below its peak (the target is not);
//   f. a codec (codec_prob): the noisy input through 8-bit mu-law (G.711).
// Output: noisy = gain (speech + g_noise noise), clean = gain target, where
// the target is the speech (its early part when c. applies).
// Cutoffs are drawn log-uniformly. A noise segment that is all zero is
// replaced by white noise; a speech segment that is all zero (a silent stretch
// of a clip) gives a noise-only example with clean = 0 and snr_db = -inf.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ssm/common.hpp"
#include "ssm/noise.hpp"

namespace ssm {

struct MixerConfig {
  double snr_min_db = -5, snr_max_db = 20;
  double speed_min = 1, speed_max = 1;  // speech speed factor range; 1, 1: as recorded (and no draw made)
  // Short clips joined into continuous speech (1. below) instead of one clip
  // and silence: a segment of a second or more then holds speech throughout,
  // as a recording of someone talking does.
  bool join_clips = false;
  double join_pause_min_s = 0.1, join_pause_max_s = 0.4;
  double level_min_dbfs = -25, level_max_dbfs = -5;  // RMS of the mixture
  double max_peak = 0.99;                             // no |sample| above this

  // Relative weights of the noise sources (need not sum to 1).
  double weight_clip = 0.5;  // a segment of a recorded noise clip
  double weight_white = 0.05, weight_pink = 0.1, weight_brown = 0.05;
  double weight_hum = 0.1, weight_fan = 0.1, weight_babble = 0.1;

  // Probabilities of each filter of the colouring steps.
  double noise_lowpass_prob = 0.2, noise_highpass_prob = 0.2;
  double channel_lowpass_prob = 0.1, channel_highpass_prob = 0.1;
  // Cutoff ranges; low-pass cutoffs above 0.45 rate are lowered to it.
  double lowpass_min_hz = 1000, lowpass_max_hz = 7000;
  double highpass_min_hz = 50, highpass_max_hz = 500;

  // Augmentations a. - f. above; all off by default.
  double silence_prob = 0, noise_only_prob = 0;
  double reverb_prob = 0;
  double rt60_min_s = 0.1, rt60_max_s = 1.0;
  double drr_min_db = -3, drr_max_db = 12;
  double early_ms = 50;
  double eq_prob = 0, eq_max_db = 8;
  double clipping_prob = 0, codec_prob = 0;
};

// What was drawn for one example.
enum class NoiseSource { Clip, White, Pink, Brown, Hum, Fan, Babble };
const char* noise_source_name(NoiseSource s);

struct MixInfo {
  size_t speech_clip = 0;  // index into the speech clips
  int64_t speech_start = 0;  // clip sample at output sample 0, rounded down (negative: zeros first)
  double speed = 1;          // clip samples per output sample
  NoiseSource noise = NoiseSource::Clip;
  size_t noise_clip = 0;   // index into the noise clips when noise == Clip
  double noise_lowpass_hz = 0, noise_highpass_hz = 0;      // 0: not applied
  double channel_lowpass_hz = 0, channel_highpass_hz = 0;  // 0: not applied
  double snr_db = 0;   // drawn and achieved (see 5. above); -inf: no speech
  double gain = 1;     // applied to both outputs
  double level_dbfs = 0;  // RMS of noisy after the peak limit
  bool silence = false, noise_only = false;
  double rt60_s = 0;       // 0: no room
  int eq_bands = 0;
  double clipped_db = 0;   // clip level below the peak; 0: not clipped
  bool codec = false;
};

class Mixer {
 public:
  // Clips are mono at `rate`. Throws ssm::Error naming the field or clip
  // unless: speech is non-empty, no clip is empty or has a non-finite sample,
  // noise is non-empty when weight_clip > 0, babble (weight_babble > 0) has
  // at least two speech clips, weights >= 0 with a positive sum,
  // probabilities in [0, 1], ranges ordered, cutoffs in (0, rate / 2),
  // speed factors in [0.5, 2], augmentation probabilities in [0, 1],
  // 0 < rt60_min_s <= rt60_max_s <= 5, ordered finite DRR range,
  // 0 <= early_ms, 0 <= eq_max_db <= 24,
  // level_max_dbfs <= 0 and 0 < max_peak <= 1.
  Mixer(std::vector<std::vector<float>> speech, std::vector<std::vector<float>> noise, MixerConfig config,
        int rate);

  // One example. Thread-safe: several threads may fill a batch at once.
  // Throws ssm::Error unless T >= 1.
  MixInfo example(float* noisy,  // (T)
                  float* clean,  // (T)
                  int T, uint64_t seed, uint64_t index) const;

  const MixerConfig& config() const { return config_; }
  int rate() const { return rate_; }
  size_t speech_clips() const { return speech_.size(); }
  size_t noise_clips() const { return noise_.size(); }

 private:
  std::vector<std::vector<float>> speech_;  // each (len_i) at rate_
  std::vector<std::vector<float>> noise_;   // each (len_j) at rate_
  MixerConfig config_;
  int rate_;
};

}  // namespace ssm
