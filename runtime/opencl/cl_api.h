/*!
 * \file cl_api.h
 * \brief OpenCL entry points resolved at run time with dlopen.
 *
 * The runtime is not linked against libOpenCL: a machine without an ICD loader can still load
 * it (every query then reports "no device" with the reason), and the aarch64 build needs no
 * arm64 libOpenCL to link against. Mali boards ship their own libOpenCL.so; the environment
 * variable TVM_LOWRANK_LIBOPENCL names it when it is not on the loader's search path.
 */
#ifndef TVM_LOWRANK_RUNTIME_OPENCL_CL_API_H_
#define TVM_LOWRANK_RUNTIME_OPENCL_CL_API_H_

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <string>

namespace tvm_lowrank {
namespace opencl {

// Every OpenCL function the runtime calls; a new call needs one entry here.
#define TVM_LOWRANK_CL_FUNCTIONS(X) \
  X(clGetPlatformIDs)               \
  X(clGetPlatformInfo)              \
  X(clGetDeviceIDs)                 \
  X(clGetDeviceInfo)                \
  X(clCreateContext)                \
  X(clReleaseContext)               \
  X(clCreateCommandQueue)           \
  X(clReleaseCommandQueue)          \
  X(clFinish)                       \
  X(clCreateBuffer)                 \
  X(clReleaseMemObject)             \
  X(clEnqueueReadBuffer)            \
  X(clEnqueueWriteBuffer)           \
  X(clEnqueueCopyBuffer)            \
  X(clCreateProgramWithSource)      \
  X(clCreateProgramWithBinary)      \
  X(clBuildProgram)                 \
  X(clGetProgramBuildInfo)          \
  X(clReleaseProgram)               \
  X(clCreateKernel)                 \
  X(clReleaseKernel)                \
  X(clSetKernelArg)                 \
  X(clEnqueueNDRangeKernel)

/*! \brief Table of the resolved OpenCL functions. */
struct CLApi {
#define TVM_LOWRANK_CL_DECLARE(name) decltype(&::name) name = nullptr;
  TVM_LOWRANK_CL_FUNCTIONS(TVM_LOWRANK_CL_DECLARE)
#undef TVM_LOWRANK_CL_DECLARE
};

/*! \brief The OpenCL functions, or nullptr when no usable libOpenCL was found (see CLLoadError). */
const CLApi* TryCL();

/*! \brief The OpenCL functions; throws RuntimeError naming the libraries tried when missing. */
const CLApi& CL();

/*! \brief Why TryCL() returned nullptr; empty when it did not. */
const std::string& CLLoadError();

/*! \brief Symbolic name of an OpenCL status code, e.g. "CL_OUT_OF_RESOURCES". */
const char* CLErrorName(cl_int code);

}  // namespace opencl
}  // namespace tvm_lowrank

/*!
 * \brief Call an OpenCL function through the table; a non-CL_SUCCESS status throws RuntimeError
 *        with the call and the status name.
 */
#define TVM_LOWRANK_CL_CALL(func, ...)                                                        \
  do {                                                                                        \
    cl_int tvm_lowrank_cl_status_ = ::tvm_lowrank::opencl::CL().func(__VA_ARGS__);            \
    if (tvm_lowrank_cl_status_ != CL_SUCCESS) {                                               \
      TVM_FFI_THROW(RuntimeError) << "OpenCL " #func " failed: "                              \
                                  << ::tvm_lowrank::opencl::CLErrorName(tvm_lowrank_cl_status_); \
    }                                                                                         \
  } while (0)

/*! \brief Throw RuntimeError when an out-parameter status of an OpenCL call is not CL_SUCCESS. */
#define TVM_LOWRANK_CL_CHECK_STATUS(status, what)                                             \
  do {                                                                                        \
    if ((status) != CL_SUCCESS) {                                                             \
      TVM_FFI_THROW(RuntimeError) << "OpenCL " << (what)                                      \
                                  << " failed: " << ::tvm_lowrank::opencl::CLErrorName(status); \
    }                                                                                         \
  } while (0)

#endif  // TVM_LOWRANK_RUNTIME_OPENCL_CL_API_H_
