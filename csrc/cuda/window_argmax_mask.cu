// window_argmax_mask on CUDA (docs/design.md 2.3): the best non-excluded cell of every (wh, ww) window.
//
// Windows tile the grid from the top-left; edge windows are partial. Small windows (< 32 cells,
// HIVTP uses 2x2): one thread per window walks its cells in raster order and keeps the first best
// (ranks_before with the cell's linear index, which orders like raster order inside a window).
// Larger windows: one warp per window, each lane keeps its best over a strided subset and a
// shuffle reduction with the same comparator picks the winner. Each window writes every cell of
// its window (false, then true for the winner), so the mask needs no separate clearing.
// A window whose cells are all excluded marks nothing.
#include "common/ranking.h"
#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace vtprune {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kWarpWindowCells = 32;  // windows with at least this many cells get a warp

// Sizes as int: the binding checks that an image and the number of windows stay below 2^31.
struct WindowGrid {
  int B, H, W, wh, ww, n_wy, n_wx;

  __device__ __forceinline__ int count() const { return B * n_wy * n_wx; }
};

struct Window {
  int64_t base;  // offset of the image b
  int i0, i1, j0, j1;
};

__device__ __forceinline__ Window window_at(const WindowGrid& g, int w) {
  const int wx = w % g.n_wx;
  const int t = w / g.n_wx;
  const int wy = t % g.n_wy;
  const int b = t / g.n_wy;
  const int i0 = wy * g.wh, j0 = wx * g.ww;
  const int i1 = g.H - i0 < g.wh ? g.H : i0 + g.wh;  // partial edge windows (written to never overflow)
  const int j1 = g.W - j0 < g.ww ? g.W : j0 + g.ww;
  return Window{static_cast<int64_t>(b) * g.H * g.W, i0, i1, j0, j1};
}

// The best allowed cell seen so far (cell -1: none yet).
struct BestCell {
  int64_t cell = -1;
  float value = 0.0f;

  __device__ __forceinline__ void offer(float v, int64_t c) {
    if (c >= 0 && (cell < 0 || ranks_before(v, c, value, cell))) {
      cell = c;
      value = v;
    }
  }
};

// Clears the cell in the mask and offers it unless it is excluded.
template <typename T>
__device__ __forceinline__ void visit_cell(const T* scores, const bool* exclude, bool* mask, int64_t cell,
                                           BestCell& best) {
  mask[cell] = false;
  if (!exclude[cell]) best.offer(to_float(scores[cell]), cell);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    window_argmax_thread_kernel(const T* __restrict__ scores, const bool* __restrict__ exclude, WindowGrid g,
                                bool* __restrict__ mask) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;  // may pass 2^31 - 1
  if (thread >= g.count()) return;
  const Window win = window_at(g, static_cast<int>(thread));
  BestCell best;
  for (int i = win.i0; i < win.i1; ++i) {
    const int64_t row = win.base + static_cast<int64_t>(i) * g.W;
    for (int64_t cell = row + win.j0; cell < row + win.j1; ++cell) visit_cell(scores, exclude, mask, cell, best);
  }
  if (best.cell >= 0) mask[best.cell] = true;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    window_argmax_warp_kernel(const T* __restrict__ scores, const bool* __restrict__ exclude, WindowGrid g,
                              bool* __restrict__ mask) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (w >= g.count()) return;  // warp-uniform (kThreads is a multiple of 32): no lane is left behind
  const Window win = window_at(g, static_cast<int>(w));
  const int width = win.j1 - win.j0;
  const int cells = (win.i1 - win.i0) * width;
  BestCell best;
  for (int c = lane; c < cells; c += 32) {
    visit_cell(scores, exclude, mask, win.base + (win.i0 + c / width) * g.W + win.j0 + c % width, best);
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const int64_t other = __shfl_down_sync(kFullWarp, best.cell, offset);
    best.offer(__shfl_down_sync(kFullWarp, best.value, offset), other);
  }
  __syncwarp();  // every lane's false is written before the winner's true
  if (lane == 0 && best.cell >= 0) mask[best.cell] = true;
}

}  // namespace

template <typename T>
const char* launch_window_argmax_mask(const T* scores, const bool* exclude, int64_t B, int64_t H, int64_t W,
                                      int64_t wh, int64_t ww, bool* mask, void* stream) {
  // Window sizes beyond the image act like the image size (and keep the int arithmetic safe).
  const int64_t wh_eff = wh < H ? wh : H, ww_eff = ww < W ? ww : W;
  // ceil(H / wh) without forming H + wh - 1 (which overflows for a huge window size)
  const int64_t n_wy = H <= 0 ? 0 : (H - 1) / wh + 1, n_wx = W <= 0 ? 0 : (W - 1) / ww + 1;
  const int64_t windows = B * n_wy * n_wx;
  if (windows <= 0) return nullptr;
  const WindowGrid g{static_cast<int>(B),      static_cast<int>(H),      static_cast<int>(W),
                     static_cast<int>(wh_eff), static_cast<int>(ww_eff), static_cast<int>(n_wy),
                     static_cast<int>(n_wx)};
  const cudaStream_t s = as_stream(stream);
  const int64_t cells = wh_eff * ww_eff;
  if (cells < kWarpWindowCells) {
    window_argmax_thread_kernel<T><<<static_cast<unsigned>(ceil_div(windows, kThreads)), kThreads, 0, s>>>(
        scores, exclude, g, mask);
  } else {
    window_argmax_warp_kernel<T><<<static_cast<unsigned>(ceil_div(windows * 32, kThreads)), kThreads, 0, s>>>(
        scores, exclude, g, mask);
  }
  return launch_status();
}

#define VTPRUNE_INSTANTIATE(T)                                                                                  \
  template const char* launch_window_argmax_mask<T>(const T*, const bool*, int64_t, int64_t, int64_t, int64_t, \
                                                    int64_t, bool*, void*);
VTPRUNE_FOR_SCORE_TYPES(VTPRUNE_INSTANTIATE)
#undef VTPRUNE_INSTANTIATE

}  // namespace cuda
}  // namespace vtprune
