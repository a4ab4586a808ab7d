/*
 * Vigil's stand-in for TensorFlow Lite's c_api_experimental.h.
 *
 * github.com/mattn/go-tflite v1.0.1 includes this header and calls three
 * experimental functions with the TfLiteBuiltinOperator type. The prebuilt
 * TFLite 2.9.0 runtime Vigil uses (npm tfjs-tflite-node@0.0.2) exports the
 * functions but ships no header for them, so this file declares exactly those,
 * with the signatures of TensorFlow Lite 2.9. A runtime given with TFLITE_DIR
 * that ships its own c_api_experimental.h takes precedence: its include
 * directory comes first on the compiler's search path.
 */
#ifndef VIGIL_TFLITE_C_API_EXPERIMENTAL_H_
#define VIGIL_TFLITE_C_API_EXPERIMENTAL_H_

#include "tensorflow/lite/c/c_api.h"
#include "tensorflow/lite/c/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TfLiteBuiltinOperator is an enum in TFLite's builtin_ops.h; its values are
 * the BuiltinOperator codes of the flatbuffer schema. */
typedef int TfLiteBuiltinOperator;

TFL_CAPI_EXPORT extern void TfLiteInterpreterOptionsAddBuiltinOp(
    TfLiteInterpreterOptions* options, TfLiteBuiltinOperator op,
    const TfLiteRegistration* registration, int min_version, int max_version);

TFL_CAPI_EXPORT extern void TfLiteInterpreterOptionsAddCustomOp(
    TfLiteInterpreterOptions* options, const char* name,
    const TfLiteRegistration* registration, int min_version, int max_version);

TFL_CAPI_EXPORT extern TfLiteStatus TfLiteInterpreterResetVariableTensors(
    TfLiteInterpreter* interpreter);

#ifdef __cplusplus
}
#endif

#endif /* VIGIL_TFLITE_C_API_EXPERIMENTAL_H_ */
