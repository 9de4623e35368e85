// The CUDA kernels of region_topk_mask, window_argmax_mask, cosine_dedup_mask and allocate_budget
// (csrc/cuda/*.cu), registered for the CUDA dispatch key. Compiled only when torch has CUDA
// (setup.py); on CPU-only machines csrc/tests/Makefile syntax-checks it against the CPU wheel.
//
// Each op checks shapes/dtypes/devices (op_checks.h), allocates its outputs and workspace with the
// torch allocator, and enqueues the kernels on the current stream. Nothing here reads device data
// or synchronises: value checks are the Python wrapper's (validate=True), and the kernels are
// memory-safe for any values. Only CUDA-agnostic torch headers are used: the current stream comes
// from the AOTI C shim (declared under USE_CUDA, which setup.py defines for CUDA builds).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "cuda/launchers.h"
#include "op_checks.h"

namespace vtprune {
namespace {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

void check_on_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": the CUDA kernel needs CUDA tensors, got one on ", t.device());
}

void check_below_int32(const char* op, const char* what, int64_t value) {
  TORCH_CHECK(value < kMaxInt32, op, ": ", what, " = ", value, " must be below 2^31 - 1 for the CUDA kernel");
}

void* current_stream(const at::Tensor& t) {
  void* stream = nullptr;
  TORCH_CHECK(aoti_torch_get_current_cuda_stream(t.get_device(), &stream) == AOTI_TORCH_SUCCESS,
              "vtprune: could not get the current CUDA stream of ", t.device());
  return stream;
}

void check_launch(const char* op, const char* error) {
  TORCH_CHECK(error == nullptr, op, ": CUDA kernel launch failed: ", error);
}

// Calls f(static_cast<T*>(nullptr)) with T the CUDA type of a score dtype.
template <typename F>
const char* with_score_type(const char* op, at::ScalarType dtype, F&& f) {
  switch (dtype) {
    case at::kFloat:
      return f(static_cast<float*>(nullptr));
    case at::kHalf:
      return f(static_cast<__half*>(nullptr));
    case at::kBFloat16:
      return f(static_cast<__nv_bfloat16*>(nullptr));
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", dtype);
  }
}

template <typename Tag>
using TypeOf = std::remove_pointer_t<Tag>;

at::Tensor region_topk_mask_cuda(const at::Tensor& scores_in, const at::Tensor& region_ids_in,
                                 const at::Tensor& k_in) {
  constexpr const char* op = "region_topk_mask";
  check_region_topk_mask_args(scores_in, region_ids_in, k_in);
  check_on_cuda(op, scores_in);
  c10::DeviceGuard guard(scores_in.device());
  const at::Tensor scores = scores_in.contiguous(), region_ids = region_ids_in.contiguous(), k = k_in.contiguous();
  const int64_t B = scores.size(0), N = scores.size(1), R = k.size(1);
  check_below_int32(op, "N", N);
  check_below_int32(op, "B", B);  // one block per row (gridDim.x < 2^31)
  check_below_int32(op, "B * R", B * R);  // one block per segment
  at::Tensor mask = at::empty({B, N}, scores.options().dtype(at::kBool));
  const int64_t ws_bytes = static_cast<int64_t>(cuda::region_topk_mask_workspace_bytes(B, N, R));
  at::Tensor workspace = at::empty({ws_bytes}, scores.options().dtype(at::kByte));
  const int64_t ids_row_stride = region_ids.dim() == 2 ? N : 0;
  check_launch(op, with_score_type(op, scores.scalar_type(), [&](auto tag) {
                 using T = TypeOf<decltype(tag)>;
                 return cuda::launch_region_topk_mask<T>(
                     static_cast<const T*>(scores.const_data_ptr()), region_ids.const_data_ptr<int64_t>(),
                     ids_row_stride, k.const_data_ptr<int64_t>(), B, N, R, workspace.mutable_data_ptr(),
                     mask.mutable_data_ptr<bool>(), current_stream(scores));
               }));
  return mask;
}

at::Tensor window_argmax_mask_cuda(const at::Tensor& scores_in, const at::Tensor& exclude_in, at::IntArrayRef window) {
  constexpr const char* op = "window_argmax_mask";
  check_window_argmax_mask_args(scores_in, exclude_in, window);
  check_on_cuda(op, scores_in);
  c10::DeviceGuard guard(scores_in.device());
  const at::Tensor scores = scores_in.contiguous(), exclude = exclude_in.contiguous();
  const int64_t B = scores.size(0), H = scores.size(1), W = scores.size(2);
  const int64_t wh = window[0], ww = window[1];
  check_below_int32(op, "H * W", H * W);
  // ceil(H / wh) without forming H + wh - 1, which overflows for a huge window size
  const int64_t windows_y = H == 0 ? 0 : (H - 1) / wh + 1, windows_x = W == 0 ? 0 : (W - 1) / ww + 1;
  check_below_int32(op, "the number of windows", B * windows_y * windows_x);
  at::Tensor mask = at::empty({B, H, W}, scores.options().dtype(at::kBool));
  check_launch(op, with_score_type(op, scores.scalar_type(), [&](auto tag) {
                 using T = TypeOf<decltype(tag)>;
                 return cuda::launch_window_argmax_mask<T>(static_cast<const T*>(scores.const_data_ptr()),
                                                           exclude.const_data_ptr<bool>(), B, H, W, wh, ww,
                                                           mask.mutable_data_ptr<bool>(), current_stream(scores));
               }));
  return mask;
}

// The cosine Gram matrix of every image, each row sorted descending: values float64 and column
// indices int32, [B, Np, Np]. The cosines of common/cosine.h (cosine_gram.cu: one summation order,
// so identical vectors get identical cosines, bit for bit the CPU's); one batched sort. NaN cosines
// are stored as +inf (the NaN marker of common/dedup.h) before the sort: torch's CUDA radix sort
// ranks a NaN by its sign bit, +inf always first. Rows are padded with zero vectors to Np for
// aligned int4 loads. Every token rather than the candidates only: gathering a data-dependent count
// of rows would need a host sync.
// Memory per Gram entry: 8 (G) before the sort; inside torch.sort up to about 48 (G, sorted values,
// int64 indices, torch's iota of indices, CUB's double buffers; rows of <= 1024 sort in place: 24);
// 12 once the sort returns (sorted values and int32 columns: G and the int64 indices are freed as
// soon as they are consumed). Np = 3000: 432 MB per image at the peak, 108 MB for the kernel.
std::tuple<at::Tensor, at::Tensor> sorted_cosine_gram(const at::Tensor& x, int64_t Np) {
  constexpr const char* op = "cosine_dedup_mask";
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  const int64_t tiles = (Np + 63) / 64;
  check_below_int32(op, "the number of Gram tiles", B * tiles * (tiles + 1) / 2);
  at::Tensor gram = at::empty({B, Np, Np}, x.options().dtype(at::kDouble));
  {
    at::Tensor norm2 = at::empty({B, Np}, x.options().dtype(at::kDouble));
    check_launch(op, with_score_type(op, x.scalar_type(), [&](auto tag) {
                   using T = TypeOf<decltype(tag)>;
                   return cuda::launch_cosine_gram<T>(static_cast<const T*>(x.const_data_ptr()), B, N, C, Np,
                                                      norm2.mutable_data_ptr<double>(), gram.mutable_data_ptr<double>(),
                                                      current_stream(x));
                 }));
  }
  gram.nan_to_num_(/*nan=*/std::numeric_limits<double>::infinity());
  auto sorted = at::sort(gram, /*dim=*/-1, /*descending=*/true);
  gram.reset();
  at::Tensor values = std::move(std::get<0>(sorted));
  at::Tensor columns = std::get<1>(sorted).to(at::kInt);
  std::get<1>(sorted).reset();
  return {values.contiguous(), columns.contiguous()};
}

// Images per chunk of cosine_dedup_mask: the sorted Gram matrices of a chunk hold at most
// kDedupChunkEntries entries (at least one image), which bounds the op's transient memory to about
// 48 bytes * 2^23 = 384 MiB, or one image where a single image is larger (N = 3000: 432 MB;
// N = 9000: 3.9 GB), whatever B is. Without chunks, batch 8 at N = 3000 would peak at ~3.5 GB.
// Chunks run one after another on the current stream; the caching allocator hands a freed chunk's
// memory to the next one in stream order, so nothing waits on the host.
constexpr int64_t kDedupChunkEntries = int64_t{1} << 23;

int64_t dedup_images_per_chunk(int64_t B, int64_t Np) {
  const int64_t per_image = Np * Np;
  const int64_t images = per_image > 0 ? kDedupChunkEntries / per_image : B;
  return std::max<int64_t>(1, std::min<int64_t>(B, images));
}

at::Tensor cosine_dedup_mask_cuda(const at::Tensor& x, const at::Tensor& candidates_in,
                                  const at::Tensor& order_scores_in, const at::Tensor& n_keep_in, int64_t step) {
  constexpr const char* op = "cosine_dedup_mask";
  check_cosine_dedup_mask_args(x, candidates_in, order_scores_in, n_keep_in, step);
  check_on_cuda(op, x);
  c10::DeviceGuard guard(x.device());
  const int64_t B = x.size(0), N = x.size(1);
  const int64_t Np = cuda::dedup_gram_size(N);  // N rounded up to a multiple of 4
  check_below_int32(op, "N rounded up to a multiple of 4", Np);
  at::Tensor mask = at::empty({B, N}, x.options().dtype(at::kBool));
  if (B == 0 || N == 0) return mask;
  const at::Tensor candidates = candidates_in.contiguous(), order_scores = order_scores_in.contiguous(),
                   n_keep = n_keep_in.contiguous(), features = x.contiguous();
  const int64_t chunk = dedup_images_per_chunk(B, Np);
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t nb = std::min(chunk, B - b0);
    // Rows b0 .. b0+nb of every (contiguous) tensor: contiguous views, pointers at the chunk.
    const at::Tensor chunk_candidates = candidates.narrow(0, b0, nb), chunk_scores = order_scores.narrow(0, b0, nb),
                     chunk_keep = n_keep.narrow(0, b0, nb);
    at::Tensor chunk_mask = mask.narrow(0, b0, nb);
    at::Tensor sorted_values, sorted_columns;  // (std::tie: lambdas cannot capture structured bindings in C++17)
    std::tie(sorted_values, sorted_columns) = sorted_cosine_gram(features.narrow(0, b0, nb), Np);
    const int64_t ws_bytes = static_cast<int64_t>(cuda::cosine_dedup_mask_workspace_bytes(nb, N));
    at::Tensor workspace = at::empty({ws_bytes}, x.options().dtype(at::kByte));
    check_launch(op, with_score_type(op, chunk_scores.scalar_type(), [&](auto tag) {
                   using T = TypeOf<decltype(tag)>;
                   return cuda::launch_cosine_dedup_mask<T>(
                       sorted_values.const_data_ptr<double>(), sorted_columns.const_data_ptr<int32_t>(),
                       chunk_candidates.const_data_ptr<bool>(), static_cast<const T*>(chunk_scores.const_data_ptr()),
                       chunk_keep.const_data_ptr<int64_t>(), step, nb, N,
                       ws_bytes ? workspace.mutable_data_ptr() : nullptr, chunk_mask.mutable_data_ptr<bool>(),
                       current_stream(x));
                 }));
  }
  return mask;
}

at::Tensor allocate_budget_cuda(const at::Tensor& weights_in, const at::Tensor& total_in,
                                const at::Tensor& capacity_in) {
  constexpr const char* op = "allocate_budget";
  check_allocate_budget_args(weights_in, total_in, capacity_in);
  check_on_cuda(op, weights_in);
  c10::DeviceGuard guard(weights_in.device());
  const at::Tensor weights = weights_in.contiguous(), total = total_in.contiguous(),
                   capacity = capacity_in.contiguous();
  const int64_t B = weights.size(0), S = weights.size(1);
  check_below_int32(op, "S", S);
  at::Tensor out = at::empty({B, S}, weights.options().dtype(at::kLong));
  const int64_t ws_bytes = static_cast<int64_t>(cuda::allocate_budget_workspace_bytes(B, S));
  at::Tensor workspace = at::empty({ws_bytes}, weights.options().dtype(at::kByte));
  auto launch = [&](auto tag) {
    using W = TypeOf<decltype(tag)>;
    return cuda::launch_allocate_budget<W>(static_cast<const W*>(weights.const_data_ptr()),
                                           total.const_data_ptr<int64_t>(), capacity.const_data_ptr<int64_t>(), B, S,
                                           ws_bytes ? workspace.mutable_data_ptr() : nullptr,
                                           out.mutable_data_ptr<int64_t>(), current_stream(weights));
  };
  const char* error = weights.scalar_type() == at::kDouble ? launch(static_cast<double*>(nullptr))
                                                           : with_score_type(op, weights.scalar_type(), launch);
  check_launch(op, error);
  return out;
}

}  // namespace
}  // namespace vtprune

TORCH_LIBRARY_IMPL(vtprune, CUDA, m) {
  m.impl("region_topk_mask", &vtprune::region_topk_mask_cuda);
  m.impl("window_argmax_mask", &vtprune::window_argmax_mask_cuda);
  m.impl("cosine_dedup_mask", &vtprune::cosine_dedup_mask_cuda);
  m.impl("allocate_budget", &vtprune::allocate_budget_cuda);
}
