/*!
 * \file opencl_runtime.h
 * \brief Shared state of tvm-lowrank's OpenCL runtime for the TVM 0.27 wheel.
 *
 * TVM's runtime finds a device runtime only through global functions: "device_api.opencl"
 * (the DeviceAPI behind tvm.opencl(n)), "ffi.Module.create.opencl" (called by the compiler's
 * OpenCL codegen; without it tvm.compile returns a module that cannot run) and
 * "ffi.Module.load_from_bytes.opencl" (called for the "opencl" entry of an exported library's
 * embedded module tree). This library registers all three; see registry.cc.
 */
#ifndef TVM_LOWRANK_RUNTIME_OPENCL_OPENCL_RUNTIME_H_
#define TVM_LOWRANK_RUNTIME_OPENCL_OPENCL_RUNTIME_H_

#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/device_api.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "cl_api.h"

namespace tvm_lowrank {
namespace opencl {

/*! \brief One OpenCL device as tvm.opencl(index) sees it; each has its own context. */
struct DeviceSlot {
  cl_platform_id platform = nullptr;
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;  // default in-order queue, used when no stream is set
  std::string name;
  std::string platform_name;
};

/*!
 * \brief The devices of all platforms, GPUs first, then accelerators, then CPUs (so that on a
 *        machine with a real GPU and PoCL, tvm.opencl(0) is the GPU).
 *
 * TVM_LOWRANK_OPENCL_DEVICE_TYPE=gpu|cpu|accelerator|all restricts the list.
 * Discovery happens once, on first use; it never throws: with no loader or no platform the
 * list is empty and UnavailableReason() says why.
 */
class Workspace {
 public:
  static Workspace& Global();
  int NumDevices();
  /*! \brief The device, or RuntimeError naming the valid range / the reason there is none. */
  DeviceSlot& Slot(int device_id);
  /*! \brief Empty when at least one device exists. */
  std::string UnavailableReason();
  /*! \brief The queue to use: `stream` when given, else the stream set for the device through
   *         TVM (TVMFFIEnvSetStream), else the device's default queue. */
  cl_command_queue Queue(int device_id, void* stream = nullptr);

 private:
  void Discover();
  std::once_flag once_;
  std::vector<DeviceSlot> slots_;
  std::string reason_;
};

/*! \brief Device id of the calling thread, set by DeviceAPI::SetDevice (TVM's __tvm_set_device). */
int& CurrentDeviceId();

/*!
 * \brief What AllocDataSpace returns: TVM's host code only passes the pointer along to kernels,
 *        so it can be a descriptor instead of a device address.
 */
struct alignas(64) DeviceBuffer {
  static constexpr uint32_t kMagic = 0x4f434c42;  // "OCLB"
  uint32_t magic = kMagic;
  int device_id = 0;
  size_t nbytes = 0;
  cl_mem mem = nullptr;
};

/*! \brief `ptr` as a DeviceBuffer of this runtime, or RuntimeError naming `what`. */
DeviceBuffer* AsDeviceBuffer(void* ptr, const char* what);

/*! \brief The process-wide DeviceAPI object that "device_api.opencl" hands to TVM. */
tvm::runtime::DeviceAPI* DeviceAPIInstance();

/*! \brief Module factory with the signature of the compiler's "ffi.Module.create.opencl". */
tvm::ffi::Module CreateModule(tvm::ffi::Bytes code, tvm::ffi::String fmt,
                              tvm::ffi::Map<tvm::ffi::String, tvm::ffi::ObjectRef> fmap,
                              tvm::ffi::Map<tvm::ffi::String, tvm::ffi::String> source);

/*! \brief Loader for the bytes a serialized "opencl" module left in an exported library. */
tvm::ffi::Module LoadModuleFromBytes(const tvm::ffi::Bytes& bytes);

}  // namespace opencl
}  // namespace tvm_lowrank

#endif  // TVM_LOWRANK_RUNTIME_OPENCL_OPENCL_RUNTIME_H_
