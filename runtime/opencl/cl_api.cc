/*!
 * \file cl_api.cc
 * \brief dlopen of the OpenCL ICD loader (or a vendor libOpenCL) and status-code names.
 */
#include "cl_api.h"

#include <dlfcn.h>
#include <tvm/ffi/error.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace tvm_lowrank {
namespace opencl {
namespace {

struct LoadedCL {
  CLApi api;
  bool ok = false;
  std::string error;
};

std::vector<std::string> CandidateLibraries() {
  std::vector<std::string> names;
  if (const char* explicit_lib = std::getenv("TVM_LOWRANK_LIBOPENCL")) {
    if (*explicit_lib) names.emplace_back(explicit_lib);
  }
  // The ICD loader (Debian ocl-icd-libopencl1), then the unversioned name vendors ship.
  names.emplace_back("libOpenCL.so.1");
  names.emplace_back("libOpenCL.so");
  return names;
}

LoadedCL Load() {
  LoadedCL loaded;
  std::string tried;
  for (const std::string& name : CandidateLibraries()) {
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + name + ": " + (why ? why : "not found");
      continue;
    }
    std::string missing;
#define TVM_LOWRANK_CL_RESOLVE(fname)                                                   \
  loaded.api.fname = reinterpret_cast<decltype(loaded.api.fname)>(dlsym(handle, #fname)); \
  if (loaded.api.fname == nullptr) missing += " " #fname;
    TVM_LOWRANK_CL_FUNCTIONS(TVM_LOWRANK_CL_RESOLVE)
#undef TVM_LOWRANK_CL_RESOLVE
    if (missing.empty()) {
      loaded.ok = true;
      return loaded;
    }
    tried += "\n  " + name + ": lacks" + missing;
    dlclose(handle);
  }
  loaded.error =
      "no usable OpenCL library (install the ICD loader and a driver, e.g. Debian "
      "ocl-icd-libopencl1 and pocl-opencl-icd, or set TVM_LOWRANK_LIBOPENCL to the vendor "
      "libOpenCL.so); tried:" +
      tried;
  return loaded;
}

const LoadedCL& Loaded() {
  static const LoadedCL* loaded = new LoadedCL(Load());  // never freed: used until exit
  return *loaded;
}

}  // namespace

const CLApi* TryCL() { return Loaded().ok ? &Loaded().api : nullptr; }

const CLApi& CL() {
  const CLApi* api = TryCL();
  if (api == nullptr) TVM_FFI_THROW(RuntimeError) << CLLoadError();
  return *api;
}

const std::string& CLLoadError() { return Loaded().error; }

const char* CLErrorName(cl_int code) {
  switch (code) {
#define TVM_LOWRANK_CL_ERROR_CASE(name) \
  case name:                            \
    return #name;
    TVM_LOWRANK_CL_ERROR_CASE(CL_SUCCESS)
    TVM_LOWRANK_CL_ERROR_CASE(CL_DEVICE_NOT_FOUND)
    TVM_LOWRANK_CL_ERROR_CASE(CL_DEVICE_NOT_AVAILABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_COMPILER_NOT_AVAILABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_MEM_OBJECT_ALLOCATION_FAILURE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_OUT_OF_RESOURCES)
    TVM_LOWRANK_CL_ERROR_CASE(CL_OUT_OF_HOST_MEMORY)
    TVM_LOWRANK_CL_ERROR_CASE(CL_PROFILING_INFO_NOT_AVAILABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_MEM_COPY_OVERLAP)
    TVM_LOWRANK_CL_ERROR_CASE(CL_IMAGE_FORMAT_MISMATCH)
    TVM_LOWRANK_CL_ERROR_CASE(CL_IMAGE_FORMAT_NOT_SUPPORTED)
    TVM_LOWRANK_CL_ERROR_CASE(CL_BUILD_PROGRAM_FAILURE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_MAP_FAILURE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    TVM_LOWRANK_CL_ERROR_CASE(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    TVM_LOWRANK_CL_ERROR_CASE(CL_COMPILE_PROGRAM_FAILURE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_LINKER_NOT_AVAILABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_LINK_PROGRAM_FAILURE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_DEVICE_PARTITION_FAILED)
    TVM_LOWRANK_CL_ERROR_CASE(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_VALUE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_DEVICE_TYPE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_PLATFORM)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_DEVICE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_CONTEXT)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_QUEUE_PROPERTIES)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_COMMAND_QUEUE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_HOST_PTR)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_MEM_OBJECT)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_IMAGE_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_SAMPLER)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_BINARY)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_BUILD_OPTIONS)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_PROGRAM)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_PROGRAM_EXECUTABLE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_KERNEL_NAME)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_KERNEL_DEFINITION)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_KERNEL)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_ARG_INDEX)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_ARG_VALUE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_ARG_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_KERNEL_ARGS)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_WORK_DIMENSION)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_WORK_GROUP_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_WORK_ITEM_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_GLOBAL_OFFSET)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_EVENT_WAIT_LIST)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_EVENT)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_OPERATION)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_GL_OBJECT)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_BUFFER_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_MIP_LEVEL)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_GLOBAL_WORK_SIZE)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_PROPERTY)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_IMAGE_DESCRIPTOR)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_COMPILER_OPTIONS)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_LINKER_OPTIONS)
    TVM_LOWRANK_CL_ERROR_CASE(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef TVM_LOWRANK_CL_ERROR_CASE
    case -1001:
      return "CL_PLATFORM_NOT_FOUND_KHR";
    default:
      return "unknown OpenCL status";
  }
}

}  // namespace opencl
}  // namespace tvm_lowrank
