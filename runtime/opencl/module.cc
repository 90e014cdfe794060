/*!
 * \file module.cc
 * \brief The "opencl" runtime module: TVM's serialized format, per-device program builds and
 *        kernel launches with the work sizes TVM's host code passes after the kernel arguments.
 */
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/accessor.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <utility>

#include "opencl_runtime.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "TVM's module serialization is little-endian; this runtime reads it with memcpy");

namespace tvm_lowrank {
namespace opencl {

namespace ffi = tvm::ffi;

namespace {

/*! \brief What TVM's FunctionInfo says about one kernel. */
struct KernelInfo {
  std::string name;
  std::vector<DLDataType> arg_types;
  std::vector<std::string> launch_param_tags;  // one launch value per tag follows the arguments
  std::vector<int32_t> arg_extra_tags;         // CUDA tensor maps; kept only to re-serialize
};

// Ordered so that SaveToBytes is deterministic.
using KernelTable = std::map<std::string, KernelInfo>;

/*!
 * \brief Reader of TVM's binary serialization (little-endian; a u64 count before every string
 *        and array). The opencl module is: fmt, {name: FunctionInfo}, code.
 */
class ByteReader {
 public:
  ByteReader(const char* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  T Pod(const char* what) {
    Need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string Str(const char* what) {
    uint64_t size = Pod<uint64_t>(what);
    Need(size, what);
    std::string text(data_ + pos_, size);
    pos_ += size;
    return text;
  }

  uint64_t Count(const char* what, size_t min_item_size) {
    uint64_t count = Pod<uint64_t>(what);
    Need(count * min_item_size, what);  // rejects absurd counts before any allocation
    return count;
  }

 private:
  void Need(uint64_t n, const char* what) const {
    if (n > size_ - pos_) {
      TVM_FFI_THROW(ValueError) << "corrupt opencl module in the library: " << what << " at byte "
                                << pos_ << " needs " << n << " bytes, " << size_ - pos_
                                << " left";
    }
  }
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

class ByteWriter {
 public:
  template <typename T>
  void Pod(const T& value) {
    out_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void Str(const std::string& text) {
    Pod<uint64_t>(text.size());
    out_ += text;
  }
  std::string& Result() { return out_; }

 private:
  std::string out_;
};

void WriteKernelTable(ByteWriter* out, const KernelTable& kernels) {
  out->Pod<uint64_t>(kernels.size());
  for (const auto& [key, info] : kernels) {
    out->Str(key);
    out->Str(info.name);
    out->Pod<uint64_t>(info.arg_types.size());
    for (DLDataType type : info.arg_types) {
      out->Pod<uint8_t>(type.code);
      out->Pod<uint8_t>(type.bits);
      out->Pod<uint16_t>(type.lanes);
    }
    out->Pod<uint64_t>(info.launch_param_tags.size());
    for (const std::string& tag : info.launch_param_tags) out->Str(tag);
    out->Pod<uint64_t>(info.arg_extra_tags.size());
    for (int32_t tag : info.arg_extra_tags) out->Pod<int32_t>(tag);
  }
}

KernelTable ReadKernelTable(ByteReader* in) {
  KernelTable kernels;
  uint64_t count = in->Count("function count", 8);
  for (uint64_t i = 0; i < count; ++i) {
    std::string key = in->Str("function key");
    KernelInfo info;
    info.name = in->Str("function name");
    uint64_t num_args = in->Count("argument count", 4);
    for (uint64_t a = 0; a < num_args; ++a) {
      DLDataType type;
      type.code = in->Pod<uint8_t>("argument type");
      type.bits = in->Pod<uint8_t>("argument type");
      type.lanes = in->Pod<uint16_t>("argument type");
      info.arg_types.push_back(type);
    }
    uint64_t num_tags = in->Count("launch parameter count", 8);
    for (uint64_t t = 0; t < num_tags; ++t) info.launch_param_tags.push_back(in->Str("launch tag"));
    uint64_t num_extra = in->Count("argument tag count", 4);
    for (uint64_t e = 0; e < num_extra; ++e) info.arg_extra_tags.push_back(in->Pod<int32_t>("tag"));
    kernels.emplace(std::move(key), std::move(info));
  }
  return kernels;
}

/*! \brief KernelInfo from a runtime.FunctionInfo object, read through its reflected fields. */
KernelInfo FromFunctionInfo(const ffi::ObjectRef& function_info) {
  static const char* kType = "runtime.FunctionInfo";
  static const ffi::reflection::FieldGetter name(kType, "name");
  static const ffi::reflection::FieldGetter arg_types(kType, "arg_types");
  static const ffi::reflection::FieldGetter launch_param_tags(kType, "launch_param_tags");
  static const ffi::reflection::FieldGetter arg_extra_tags(kType, "arg_extra_tags");
  KernelInfo info;
  info.name = name(function_info).cast<ffi::String>();
  for (DLDataType type : arg_types(function_info).cast<ffi::Array<DLDataType>>()) {
    info.arg_types.push_back(type);
  }
  for (const ffi::String& tag : launch_param_tags(function_info).cast<ffi::Array<ffi::String>>()) {
    info.launch_param_tags.emplace_back(tag);
  }
  for (int64_t tag : arg_extra_tags(function_info).cast<ffi::Array<int64_t>>()) {
    info.arg_extra_tags.push_back(static_cast<int32_t>(tag));
  }
  return info;
}

std::string ProgramBuildLog(cl_program program, cl_device_id device) {
  size_t size = 0;
  if (CL().clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size) !=
      CL_SUCCESS) {
    return "(no build log)";
  }
  std::string log(size, '\0');
  CL().clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
  return log;
}

/*! \brief IEEE binary16 bits of `value`, rounded to nearest even (C++17 has no half type). */
uint16_t HalfBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t mantissa = bits & 0x7fffffu;
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127 + 15;
  if (((bits >> 23) & 0xffu) == 0xffu) return sign | 0x7c00u | (mantissa ? 0x200u : 0u);
  if (exponent >= 31) return sign | 0x7c00u;  // too large: infinity
  int shift = 13;
  uint32_t half = 0;
  if (exponent <= 0) {  // subnormal half
    if (exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    shift = 14 - exponent;
  } else {
    half = static_cast<uint32_t>(exponent) << 10;
  }
  half |= mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;  // a carry rounds up correctly
  return static_cast<uint16_t>(sign | half);
}

struct KernelSlot {
  cl_kernel kernel = nullptr;
  std::mutex launch_mutex;  // clSetKernelArg + enqueue must not interleave between threads
};

}  // namespace

class OpenCLModuleObj final : public ffi::ModuleObj {
 public:
  OpenCLModuleObj(std::string code, std::string fmt, KernelTable kernels,
                  std::map<std::string, std::string> sources)
      : code_(std::move(code)),
        fmt_(std::move(fmt)),
        kernels_(std::move(kernels)),
        sources_(std::move(sources)) {}

  ~OpenCLModuleObj() {
    const CLApi* cl = TryCL();
    if (cl == nullptr) return;
    for (auto& entry : kernel_slots_) cl->clReleaseKernel(entry.second->kernel);
    for (auto& entry : programs_) cl->clReleaseProgram(entry.second);
  }

  const char* kind() const final { return "opencl"; }

  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final;

  ffi::Bytes SaveToBytes() const final {
    ByteWriter out;
    out.Str(fmt_);
    WriteKernelTable(&out, kernels_);
    out.Str(code_);
    return ffi::Bytes(std::move(out.Result()));
  }

  ffi::String InspectSource(const ffi::String& format) const final {
    auto it = sources_.find(std::string(format.empty() ? fmt_ : std::string(format)));
    if (it != sources_.end()) return it->second;
    if (fmt_ == "cl" && (format.empty() || format == "cl")) return code_;
    return ffi::String();
  }

  ffi::Array<ffi::String> GetWriteFormats() const final { return {ffi::String(fmt_)}; }

  void WriteToFile(const ffi::String& file_name, const ffi::String& format) const final {
    std::ofstream file(std::string(file_name), std::ios::binary);
    file.write(code_.data(), static_cast<std::streamsize>(code_.size()));
    if (!file) TVM_FFI_THROW(RuntimeError) << "cannot write OpenCL code to " << file_name;
  }

  /*! \brief Kernel `name` on opencl(device_id); the first call per device builds the program. */
  KernelSlot* Kernel(int device_id, const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = kernel_slots_.find({device_id, name});
    if (found != kernel_slots_.end()) return found->second.get();
    cl_int status = CL_SUCCESS;
    cl_kernel kernel = CL().clCreateKernel(Program(device_id), name.c_str(), &status);
    if (status != CL_SUCCESS) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL clCreateKernel(" << name
                                  << ") failed: " << CLErrorName(status);
    }
    auto slot = std::make_unique<KernelSlot>();
    slot->kernel = kernel;
    return kernel_slots_.emplace(std::make_pair(device_id, name), std::move(slot))
        .first->second.get();
  }

 private:
  /*! \brief The whole module's program for a device, built once (caller holds mutex_). */
  cl_program Program(int device_id) {
    auto found = programs_.find(device_id);
    if (found != programs_.end()) return found->second;
    const DeviceSlot& device = Workspace::Global().Slot(device_id);
    cl_int status = CL_SUCCESS;
    cl_program program = nullptr;
    if (fmt_ == "cl") {
      const char* text = code_.data();
      size_t size = code_.size();
      program = CL().clCreateProgramWithSource(device.context, 1, &text, &size, &status);
    } else if (fmt_ == "clbin" || fmt_ == "xclbin" || fmt_ == "awsxclbin" || fmt_ == "aocx") {
      const auto* binary = reinterpret_cast<const unsigned char*>(code_.data());
      size_t size = code_.size();
      cl_int binary_status = CL_SUCCESS;
      program = CL().clCreateProgramWithBinary(device.context, 1, &device.device, &size, &binary,
                                               &binary_status, &status);
      if (status == CL_SUCCESS) status = binary_status;
    } else {
      TVM_FFI_THROW(ValueError) << "OpenCL module format '" << fmt_
                                << "' is not supported (OpenCL C source 'cl' or a device binary)";
    }
    TVM_LOWRANK_CL_CHECK_STATUS(status, "program creation for " + device.name);
    const char* options = std::getenv("TVM_LOWRANK_OPENCL_BUILD_OPTIONS");
    status = CL().clBuildProgram(program, 1, &device.device, options ? options : "", nullptr,
                                 nullptr);
    if (status != CL_SUCCESS) {
      std::string log = ProgramBuildLog(program, device.device);
      CL().clReleaseProgram(program);
      TVM_FFI_THROW(RuntimeError) << "OpenCL program build for opencl(" << device_id << ") "
                                  << device.name << " failed: " << CLErrorName(status)
                                  << "\nbuild log:\n"
                                  << log;
    }
    programs_[device_id] = program;
    return program;
  }

  std::string code_;
  std::string fmt_;
  KernelTable kernels_;
  std::map<std::string, std::string> sources_;
  std::mutex mutex_;
  std::map<int, cl_program> programs_;
  std::map<std::pair<int, std::string>, std::unique_ptr<KernelSlot>> kernel_slots_;
};

namespace {

/*!
 * \brief Calls one kernel the way TVM's host code does: the kernel's arguments (buffers as
 *        DeviceBuffer*, scalars as FFI ints/floats), then one value per launch tag — the number
 *        of work-groups ("blockIdx.x/y/z") and the work-group size ("threadIdx.x/y/z").
 */
class KernelLauncher {
 public:
  KernelLauncher(OpenCLModuleObj* module, std::string name, const KernelInfo& info)
      : module_(module), name_(std::move(name)), arg_types_(info.arg_types) {
    for (const std::string& tag : info.launch_param_tags) {
      int axis = -1;  // 0-2: work-group count, 3-5: work-group size
      if (tag.size() == 10 && tag.compare(0, 9, "blockIdx.") == 0) {
        axis = Dimension(tag[9]);
      } else if (tag.size() == 11 && tag.compare(0, 10, "threadIdx.") == 0) {
        axis = Dimension(tag[10]) < 0 ? -1 : 3 + Dimension(tag[10]);
      }
      if (axis < 0) {
        TVM_FFI_THROW(ValueError) << "kernel " << name_ << " needs launch parameter '" << tag
                                  << "', which OpenCL cannot provide (dynamic shared memory, "
                                     "clusters and cooperative launch are CUDA features)";
      }
      launch_axes_.push_back(axis);
      work_dim_ = std::max<cl_uint>(work_dim_, static_cast<cl_uint>(axis % 3 + 1));
    }
  }

  void operator()(ffi::PackedArgs args) const {
    const size_t num_args = arg_types_.size();
    if (static_cast<size_t>(args.size()) != num_args + launch_axes_.size()) {
      TVM_FFI_THROW(TypeError) << "kernel " << name_ << " takes " << num_args
                               << " arguments and " << launch_axes_.size()
                               << " launch sizes, got " << args.size() << " values";
    }
    size_t groups[3] = {1, 1, 1};
    size_t local[3] = {1, 1, 1};
    for (size_t i = 0; i < launch_axes_.size(); ++i) {
      int64_t extent = args[num_args + i].cast<int64_t>();
      if (extent < 0) {
        TVM_FFI_THROW(ValueError) << "kernel " << name_ << ": negative launch size " << extent;
      }
      if (extent == 0) return;  // an empty dynamic shape: no work item to run
      int axis = launch_axes_[i];
      (axis < 3 ? groups[axis] : local[axis - 3]) = static_cast<size_t>(extent);
    }
    size_t global[3];
    for (int d = 0; d < 3; ++d) global[d] = groups[d] * local[d];

    const int device_id = CurrentDeviceId();
    KernelSlot* slot = module_->Kernel(device_id, name_);
    std::lock_guard<std::mutex> lock(slot->launch_mutex);
    for (size_t i = 0; i < num_args; ++i) SetArg(slot->kernel, i, args[i]);
    cl_int status = CL().clEnqueueNDRangeKernel(Workspace::Global().Queue(device_id),
                                                slot->kernel, work_dim_, nullptr, global, local, 0,
                                                nullptr, nullptr);
    if (status != CL_SUCCESS) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL launch of " << name_ << " on opencl(" << device_id
                                  << ") with work-groups [" << groups[0] << ", " << groups[1]
                                  << ", " << groups[2] << "] of [" << local[0] << ", " << local[1]
                                  << ", " << local[2] << "] failed: " << CLErrorName(status);
    }
  }

 private:
  static int Dimension(char axis) { return axis >= 'x' && axis <= 'z' ? axis - 'x' : -1; }

  template <typename T>
  void SetScalar(cl_kernel kernel, size_t index, T value) const {
    TVM_LOWRANK_CL_CALL(clSetKernelArg, kernel, static_cast<cl_uint>(index), sizeof(T), &value);
  }

  void SetArg(cl_kernel kernel, size_t index, ffi::AnyView value) const {
    DLDataType type = arg_types_[index];
    if (type.code == kDLOpaqueHandle) {
      std::string what = "argument " + std::to_string(index) + " of kernel " + name_;
      void* ptr = nullptr;
      const int32_t kind = value.type_index();
      if (kind == ffi::TypeIndex::kTVMFFITensor || kind == ffi::TypeIndex::kTVMFFIDLTensorPtr) {
        // A tensor passed by hand (TVM's host code passes its data pointer).
        DLTensor* tensor = value.cast<DLTensor*>();
        if (tensor->byte_offset != 0) {
          TVM_FFI_THROW(ValueError) << what << " is a view with a byte offset, which a kernel "
                                    << "argument cannot express";
        }
        ptr = tensor->data;
      } else {
        ptr = value.cast<void*>();
      }
      cl_mem mem = ptr == nullptr ? nullptr : AsDeviceBuffer(ptr, what.c_str())->mem;
      SetScalar(kernel, index, mem);
      return;
    }
    if (type.lanes == 1 && (type.code == kDLInt || type.code == kDLUInt || type.code == kDLBool)) {
      int64_t v = value.cast<int64_t>();
      switch (type.bits) {
        case 1:
        case 8:
          return SetScalar(kernel, index, static_cast<int8_t>(v));
        case 16:
          return SetScalar(kernel, index, static_cast<int16_t>(v));
        case 32:
          return SetScalar(kernel, index, static_cast<int32_t>(v));
        case 64:
          return SetScalar(kernel, index, v);
      }
    }
    if (type.lanes == 1 && type.code == kDLFloat) {
      double v = value.cast<double>();
      switch (type.bits) {
        case 16:
          return SetScalar(kernel, index, HalfBits(static_cast<float>(v)));
        case 32:
          return SetScalar(kernel, index, static_cast<float>(v));
        case 64:
          return SetScalar(kernel, index, v);
      }
    }
    TVM_FFI_THROW(TypeError) << "kernel " << name_ << " argument " << index << " has type code "
                             << static_cast<int>(type.code) << " bits "
                             << static_cast<int>(type.bits)
                             << " lanes " << type.lanes
                             << ", which the OpenCL runtime cannot pass";
  }

  OpenCLModuleObj* module_;  // kept alive by the ffi::Module captured next to this launcher
  std::string name_;
  std::vector<DLDataType> arg_types_;
  std::vector<int> launch_axes_;  // 0-2: work-group count x/y/z, 3-5: work-group size x/y/z
  cl_uint work_dim_ = 1;
};

}  // namespace

ffi::Optional<ffi::Function> OpenCLModuleObj::GetFunction(const ffi::String& name) {
  auto found = kernels_.find(std::string(name));
  if (found == kernels_.end()) return std::nullopt;
  ffi::Module self = ffi::GetRef<ffi::Module>(this);
  auto launcher = std::make_shared<const KernelLauncher>(this, found->first, found->second);
  return ffi::Function::FromPacked([self, launcher](ffi::PackedArgs args, ffi::Any* rv) {
    (*launcher)(args);
  });
}

ffi::Module CreateModule(ffi::Bytes code, ffi::String fmt,
                         ffi::Map<ffi::String, ffi::ObjectRef> fmap,
                         ffi::Map<ffi::String, ffi::String> source) {
  KernelTable kernels;
  for (const auto& [key, function_info] : fmap) {
    kernels.emplace(std::string(key), FromFunctionInfo(function_info));
  }
  std::map<std::string, std::string> sources;
  for (const auto& [format, text] : source) sources.emplace(std::string(format), std::string(text));
  return ffi::Module(ffi::make_object<OpenCLModuleObj>(std::string(code.data(), code.size()),
                                                       std::string(fmt), std::move(kernels),
                                                       std::move(sources)));
}

ffi::Module LoadModuleFromBytes(const ffi::Bytes& bytes) {
  ByteReader in(bytes.data(), bytes.size());
  std::string fmt = in.Str("format");
  KernelTable kernels = ReadKernelTable(&in);
  std::string code = in.Str("code");
  return ffi::Module(
      ffi::make_object<OpenCLModuleObj>(std::move(code), std::move(fmt), std::move(kernels),
                                        std::map<std::string, std::string>()));
}

}  // namespace opencl
}  // namespace tvm_lowrank
