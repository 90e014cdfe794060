/*!
 * \file registry.cc
 * \brief The global functions through which TVM 0.27 finds this runtime, plus a few of ours.
 *
 * TVM's own names:
 *   device_api.opencl                  () -> DeviceAPI*        tvm.opencl(n), Tensor alloc/copy
 *   ffi.Module.create.opencl           (Bytes code, String fmt, Map<String, FunctionInfo>,
 *                                       Map<String, String> source) -> Module   (tvm.compile)
 *   ffi.Module.load_from_bytes.opencl  (Bytes) -> Module   (an exported .so's "opencl" import)
 * Ours (tvm_lowrank/opencl.py uses them):
 *   tvm_lowrank.opencl.runtime_version     () -> String
 *   tvm_lowrank.opencl.device_count        () -> int
 *   tvm_lowrank.opencl.unavailable_reason  () -> String, empty when a device exists
 *   tvm_lowrank.opencl.devices             () -> Array<String> "opencl(i): device (platform)"
 */
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>

#include "opencl_runtime.h"

namespace tvm_lowrank {
namespace opencl {

constexpr const char* kRuntimeVersion = "tvm-lowrank-opencl 1";

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace ffi = tvm::ffi;
  // A runtime loaded earlier (TVM's libtvm_runtime_opencl.so) keeps the names: registering
  // them twice would abort the load.
  if (ffi::Function::GetGlobal("device_api.opencl").has_value()) return;
  ffi::reflection::GlobalDef()
      .def("device_api.opencl", []() -> void* { return DeviceAPIInstance(); })
      .def("ffi.Module.create.opencl", CreateModule)
      .def("ffi.Module.load_from_bytes.opencl", LoadModuleFromBytes)
      .def("tvm_lowrank.opencl.runtime_version", []() { return ffi::String(kRuntimeVersion); })
      .def("tvm_lowrank.opencl.device_count",
           []() -> int64_t { return Workspace::Global().NumDevices(); })
      .def("tvm_lowrank.opencl.unavailable_reason",
           []() { return ffi::String(Workspace::Global().UnavailableReason()); })
      .def("tvm_lowrank.opencl.devices", []() {
        ffi::Array<ffi::String> descriptions;
        Workspace& workspace = Workspace::Global();
        for (int i = 0; i < workspace.NumDevices(); ++i) {
          const DeviceSlot& slot = workspace.Slot(i);
          descriptions.push_back("opencl(" + std::to_string(i) + "): " + slot.name + " (" +
                                 slot.platform_name + ")");
        }
        return descriptions;
      });
}

}  // namespace opencl
}  // namespace tvm_lowrank
