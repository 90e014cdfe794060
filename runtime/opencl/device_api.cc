/*!
 * \file device_api.cc
 * \brief Device discovery and the DeviceAPI behind tvm.opencl(n): memory, copies, queues,
 *        attributes.
 */
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "opencl_runtime.h"

namespace tvm_lowrank {
namespace opencl {

using tvm::runtime::DeviceAttrKind;

namespace {

template <typename T>
T DeviceInfo(cl_device_id device, cl_device_info what) {
  T value{};
  TVM_LOWRANK_CL_CALL(clGetDeviceInfo, device, what, sizeof(T), &value, nullptr);
  return value;
}

std::string TrimNul(std::string text) {
  auto is_padding = [](char c) { return c == '\0' || std::isspace(static_cast<unsigned char>(c)); };
  while (!text.empty() && is_padding(text.back())) text.pop_back();
  return text;
}

std::string DeviceInfoString(cl_device_id device, cl_device_info what) {
  size_t size = 0;
  TVM_LOWRANK_CL_CALL(clGetDeviceInfo, device, what, 0, nullptr, &size);
  std::string text(size, '\0');
  TVM_LOWRANK_CL_CALL(clGetDeviceInfo, device, what, size, text.data(), nullptr);
  return TrimNul(text);
}

std::string PlatformName(const CLApi& cl, cl_platform_id platform) {
  size_t size = 0;
  if (cl.clGetPlatformInfo(platform, CL_PLATFORM_NAME, 0, nullptr, &size) != CL_SUCCESS) return "?";
  std::string text(size, '\0');
  cl.clGetPlatformInfo(platform, CL_PLATFORM_NAME, size, text.data(), nullptr);
  return TrimNul(text);
}

/*! \brief (major, minor) from a CL_DEVICE_VERSION string "OpenCL <major>.<minor> <vendor text>". */
std::pair<int, int> ParseOpenCLVersion(const std::string& version) {
  int major = 0, minor = 0;
  const char* digits = std::strpbrk(version.c_str(), "0123456789");
  if (digits != nullptr) std::sscanf(digits, "%d.%d", &major, &minor);
  return {major, minor};
}

struct DeviceTypeChoice {
  cl_device_type type;
  const char* name;
};

/*! \brief Device types to list, in tvm.opencl(index) order (TVM_LOWRANK_OPENCL_DEVICE_TYPE). */
std::vector<DeviceTypeChoice> DeviceTypesToList(std::string* error) {
  const std::vector<DeviceTypeChoice> all = {{CL_DEVICE_TYPE_GPU, "gpu"},
                                             {CL_DEVICE_TYPE_ACCELERATOR, "accelerator"},
                                             {CL_DEVICE_TYPE_CPU, "cpu"}};
  const char* wanted = std::getenv("TVM_LOWRANK_OPENCL_DEVICE_TYPE");
  if (wanted == nullptr || *wanted == '\0' || std::string(wanted) == "all") return all;
  for (const DeviceTypeChoice& choice : all) {
    if (choice.name == std::string(wanted)) return {choice};
  }
  *error = std::string("TVM_LOWRANK_OPENCL_DEVICE_TYPE=") + wanted +
           " is not one of gpu, accelerator, cpu, all";
  return {};
}

}  // namespace

Workspace& Workspace::Global() {
  static Workspace* workspace = new Workspace();  // never freed: buffers may outlive statics
  return *workspace;
}

void Workspace::Discover() {
  const CLApi* cl = TryCL();
  if (cl == nullptr) {
    reason_ = CLLoadError();
    return;
  }
  std::vector<DeviceTypeChoice> types = DeviceTypesToList(&reason_);
  if (types.empty()) return;
  cl_uint num_platforms = 0;
  cl_int status = cl->clGetPlatformIDs(0, nullptr, &num_platforms);
  if (status != CL_SUCCESS || num_platforms == 0) {
    reason_ = std::string("no OpenCL platform is installed (clGetPlatformIDs: ") +
              CLErrorName(status) +
              "); install a driver's ICD, e.g. Debian pocl-opencl-icd for CPUs";
    return;
  }
  std::vector<cl_platform_id> platforms(num_platforms);
  cl->clGetPlatformIDs(num_platforms, platforms.data(), nullptr);
  std::string skipped;
  for (const DeviceTypeChoice& choice : types) {
    for (cl_platform_id platform : platforms) {
      cl_uint count = 0;
      if (cl->clGetDeviceIDs(platform, choice.type, 0, nullptr, &count) != CL_SUCCESS) continue;
      std::vector<cl_device_id> devices(count);
      cl->clGetDeviceIDs(platform, choice.type, count, devices.data(), nullptr);
      for (cl_device_id device : devices) {
        DeviceSlot slot;
        slot.platform = platform;
        slot.device = device;
        slot.platform_name = PlatformName(*cl, platform);
        slot.name = DeviceInfoString(device, CL_DEVICE_NAME);
        slot.context = cl->clCreateContext(nullptr, 1, &device, nullptr, nullptr, &status);
        if (status == CL_SUCCESS) {
          slot.queue = cl->clCreateCommandQueue(slot.context, device, 0, &status);
        }
        if (status != CL_SUCCESS) {
          skipped += " " + slot.name + " (" + CLErrorName(status) + ")";
          if (slot.context != nullptr) cl->clReleaseContext(slot.context);
          continue;
        }
        slots_.push_back(slot);
      }
    }
  }
  if (slots_.empty()) {
    reason_ = "the OpenCL platforms have no usable device of the requested type";
    if (!skipped.empty()) reason_ += "; failed to open:" + skipped;
  }
}

int Workspace::NumDevices() {
  std::call_once(once_, [this] { Discover(); });
  return static_cast<int>(slots_.size());
}

std::string Workspace::UnavailableReason() {
  NumDevices();
  return reason_;
}

DeviceSlot& Workspace::Slot(int device_id) {
  int count = NumDevices();
  if (count == 0) {
    TVM_FFI_THROW(RuntimeError) << "no OpenCL device: " << reason_;
  }
  if (device_id < 0 || device_id >= count) {
    TVM_FFI_THROW(RuntimeError) << "opencl(" << device_id << ") does not exist: there are "
                                << count << " OpenCL device(s), opencl(0) to opencl(" << count - 1
                                << ")";
  }
  return slots_[device_id];
}

cl_command_queue Workspace::Queue(int device_id, void* stream) {
  if (stream != nullptr) return static_cast<cl_command_queue>(stream);
  void* current = TVMFFIEnvGetStream(kDLOpenCL, device_id);
  if (current != nullptr) return static_cast<cl_command_queue>(current);
  return Slot(device_id).queue;
}

int& CurrentDeviceId() {
  thread_local int device_id = 0;
  return device_id;
}

DeviceBuffer* AsDeviceBuffer(void* ptr, const char* what) {
  auto* buffer = static_cast<DeviceBuffer*>(ptr);
  if (buffer == nullptr || buffer->magic != DeviceBuffer::kMagic) {
    TVM_FFI_THROW(RuntimeError) << what << ": " << ptr
                                << " is not memory allocated on an OpenCL device by this runtime";
  }
  return buffer;
}

class OpenCLDeviceAPI final : public tvm::runtime::DeviceAPI {
 public:
  using DeviceAPI::AllocDataSpace;
  using DeviceAPI::CopyDataFromTo;

  void SetDevice(tvm::Device dev) final { CurrentDeviceId() = dev.device_id; }

  void GetAttr(tvm::Device dev, DeviceAttrKind kind, tvm::ffi::Any* rv) final {
    Workspace& workspace = Workspace::Global();
    if (kind == tvm::runtime::kExist) {
      *rv = static_cast<int64_t>(dev.device_id >= 0 && dev.device_id < workspace.NumDevices());
      return;
    }
    const DeviceSlot& slot = workspace.Slot(dev.device_id);
    cl_device_id device = slot.device;
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock:
        *rv = static_cast<int64_t>(DeviceInfo<size_t>(device, CL_DEVICE_MAX_WORK_GROUP_SIZE));
        return;
      case tvm::runtime::kWarpSize:
        *rv = static_cast<int64_t>(1);  // OpenCL has no warp the compiler may rely on
        return;
      case tvm::runtime::kMaxSharedMemoryPerBlock:
        *rv = static_cast<int64_t>(DeviceInfo<cl_ulong>(device, CL_DEVICE_LOCAL_MEM_SIZE));
        return;
      case tvm::runtime::kComputeVersion: {
        auto [major, minor] = ParseOpenCLVersion(DeviceInfoString(device, CL_DEVICE_VERSION));
        *rv = tvm::ffi::String(std::to_string(major) + "." + std::to_string(minor));
        return;
      }
      case tvm::runtime::kApiVersion: {
        auto [major, minor] = ParseOpenCLVersion(DeviceInfoString(device, CL_DEVICE_VERSION));
        *rv = static_cast<int64_t>(major * 100 + minor * 10);
        return;
      }
      case tvm::runtime::kDeviceName:
        *rv = tvm::ffi::String(slot.name);
        return;
      case tvm::runtime::kMaxClockRate:  // kHz, as TVM reports CUDA's
        *rv = static_cast<int64_t>(DeviceInfo<cl_uint>(device, CL_DEVICE_MAX_CLOCK_FREQUENCY)) *
              1000;
        return;
      case tvm::runtime::kMultiProcessorCount:
        *rv = static_cast<int64_t>(DeviceInfo<cl_uint>(device, CL_DEVICE_MAX_COMPUTE_UNITS));
        return;
      case tvm::runtime::kMaxThreadDimensions: {
        size_t sizes[3] = {1, 1, 1};
        TVM_LOWRANK_CL_CALL(clGetDeviceInfo, device, CL_DEVICE_MAX_WORK_ITEM_SIZES,
                            sizeof(sizes), sizes, nullptr);
        std::ostringstream text;
        text << "[" << sizes[0] << ", " << sizes[1] << ", " << sizes[2] << "]";
        *rv = tvm::ffi::String(text.str());
        return;
      }
      case tvm::runtime::kDriverVersion:
        *rv = tvm::ffi::String(DeviceInfoString(device, CL_DRIVER_VERSION));
        return;
      case tvm::runtime::kL2CacheSizeBytes:
        *rv = static_cast<int64_t>(DeviceInfo<cl_ulong>(device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE));
        return;
      case tvm::runtime::kTotalGlobalMemory:
        *rv = static_cast<int64_t>(DeviceInfo<cl_ulong>(device, CL_DEVICE_GLOBAL_MEM_SIZE));
        return;
      default:
        return;  // registers per block, GCN arch, free memory, image pitch: no OpenCL query
    }
  }

  void* AllocDataSpace(tvm::Device dev, size_t nbytes, size_t alignment,
                       DLDataType type_hint) final {
    const DeviceSlot& slot = Workspace::Global().Slot(dev.device_id);
    cl_int status = CL_SUCCESS;
    // OpenCL rejects empty buffers; a 1-byte one keeps zero-size tensors valid.
    cl_mem mem = CL().clCreateBuffer(slot.context, CL_MEM_READ_WRITE, std::max<size_t>(nbytes, 1),
                                     nullptr, &status);
    if (status != CL_SUCCESS) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL clCreateBuffer of " << nbytes << " bytes on opencl("
                                  << dev.device_id << ") " << slot.name
                                  << " failed: " << CLErrorName(status);
    }
    auto* buffer = new DeviceBuffer();
    buffer->device_id = dev.device_id;
    buffer->nbytes = nbytes;
    buffer->mem = mem;
    return buffer;
  }

  void FreeDataSpace(tvm::Device dev, void* ptr) final {
    if (ptr == nullptr) return;
    DeviceBuffer* buffer = AsDeviceBuffer(ptr, "FreeDataSpace");
    // The driver keeps the memory alive until queued commands that use it have finished.
    TVM_LOWRANK_CL_CALL(clReleaseMemObject, buffer->mem);
    buffer->magic = 0;
    delete buffer;
  }

  void StreamSync(tvm::Device dev, TVMStreamHandle stream) final {
    TVM_LOWRANK_CL_CALL(clFinish, Workspace::Global().Queue(dev.device_id, stream));
  }

  TVMStreamHandle CreateStream(tvm::Device dev) final {
    const DeviceSlot& slot = Workspace::Global().Slot(dev.device_id);
    cl_int status = CL_SUCCESS;
    cl_command_queue queue = CL().clCreateCommandQueue(slot.context, slot.device, 0, &status);
    TVM_LOWRANK_CL_CHECK_STATUS(status, "clCreateCommandQueue");
    return queue;
  }

  void FreeStream(tvm::Device dev, TVMStreamHandle stream) final {
    if (stream != nullptr) {
      TVM_LOWRANK_CL_CALL(clReleaseCommandQueue, static_cast<cl_command_queue>(stream));
    }
  }

  void SyncStreamFromTo(tvm::Device dev, TVMStreamHandle event_src,
                        TVMStreamHandle event_dst) final {
    if (event_src != event_dst) StreamSync(dev, event_src);
  }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset,
                      size_t num_bytes, tvm::Device dev_from, tvm::Device dev_to,
                      DLDataType type_hint, TVMStreamHandle stream) final {
    if (num_bytes == 0) return;
    const bool from_cl = dev_from.device_type == kDLOpenCL;
    const bool to_cl = dev_to.device_type == kDLOpenCL;
    Workspace& workspace = Workspace::Global();
    if (from_cl && to_cl) {
      DeviceBuffer* src = CheckedRange(const_cast<void*>(from), from_offset, num_bytes, "source");
      DeviceBuffer* dst = CheckedRange(to, to_offset, num_bytes, "destination");
      if (src->device_id == dst->device_id) {
        TVM_LOWRANK_CL_CALL(clEnqueueCopyBuffer, workspace.Queue(dst->device_id, stream), src->mem,
                            dst->mem, from_offset, to_offset, num_bytes, 0, nullptr, nullptr);
      } else {  // different contexts: stage through the host
        std::vector<char> staging(num_bytes);
        TVM_LOWRANK_CL_CALL(clEnqueueReadBuffer, workspace.Queue(src->device_id), src->mem, CL_TRUE,
                            from_offset, num_bytes, staging.data(), 0, nullptr, nullptr);
        TVM_LOWRANK_CL_CALL(clEnqueueWriteBuffer, workspace.Queue(dst->device_id), dst->mem,
                            CL_TRUE, to_offset, num_bytes, staging.data(), 0, nullptr, nullptr);
      }
    } else if (from_cl && dev_to.device_type == kDLCPU) {
      DeviceBuffer* src = CheckedRange(const_cast<void*>(from), from_offset, num_bytes, "source");
      TVM_LOWRANK_CL_CALL(clEnqueueReadBuffer, workspace.Queue(src->device_id, stream), src->mem,
                          CL_TRUE, from_offset, num_bytes, static_cast<char*>(to) + to_offset, 0,
                          nullptr, nullptr);
    } else if (to_cl && dev_from.device_type == kDLCPU) {
      DeviceBuffer* dst = CheckedRange(to, to_offset, num_bytes, "destination");
      // Blocking: the caller may free or reuse its host memory as soon as this returns.
      TVM_LOWRANK_CL_CALL(clEnqueueWriteBuffer, workspace.Queue(dst->device_id, stream), dst->mem,
                          CL_TRUE, to_offset, num_bytes,
                          static_cast<const char*>(from) + from_offset, 0, nullptr, nullptr);
    } else {
      TVM_FFI_THROW(RuntimeError) << "the OpenCL runtime cannot copy from "
                                  << tvm::runtime::DLDeviceType2Str(dev_from.device_type) << " to "
                                  << tvm::runtime::DLDeviceType2Str(dev_to.device_type);
    }
  }

 private:
  static DeviceBuffer* CheckedRange(void* ptr, size_t offset, size_t num_bytes, const char* role) {
    DeviceBuffer* buffer = AsDeviceBuffer(ptr, role);
    if (offset + num_bytes > buffer->nbytes) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL copy " << role << " range [" << offset << ", "
                                  << offset + num_bytes << ") exceeds its buffer of "
                                  << buffer->nbytes << " bytes";
    }
    return buffer;
  }
};

tvm::runtime::DeviceAPI* DeviceAPIInstance() {
  static OpenCLDeviceAPI* api = new OpenCLDeviceAPI();  // never freed, like TVM's own APIs
  return api;
}

}  // namespace opencl
}  // namespace tvm_lowrank
