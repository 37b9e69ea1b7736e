/*
 * A stand-in for sherpa-onnx's bundled libonnxruntime.so that forwards to another onnxruntime.
 *
 * Why: the sherpa-onnx wheel on PyPI ships a CPU-only onnxruntime, and its Python extension imports exactly one
 * symbol from it, OrtGetApiBase, bound to the symbol version of the onnxruntime it was built with (for example
 * VERS_1.28.2). Everything else goes through the function table that OrtGetApiBase returns. Dropping another
 * onnxruntime (say onnxruntime-gpu's) in its place fails on that symbol version, but this library satisfies it:
 *
 *   - it is linked with SONAME libonnxruntime.so, the name in the extension's DT_NEEDED entry;
 *   - a version script (written by nemo2sherpa.validate.ort_runtime.build_shim) exports OrtGetApiBase under the
 *     version the extension asks for;
 *   - OrtGetApiBase dlopen()s the real onnxruntime (the path compiled in as NEMO2SHERPA_ORT_TARGET, or the
 *     environment variable NEMO2SHERPA_ORT_TARGET when set) and returns that library's OrtApiBase.
 *
 * Loaded with RTLD_GLOBAL before `import sherpa_onnx`, the dynamic loader finds an object with SONAME
 * libonnxruntime.so already in the process and never opens the bundled one. The onnxruntime API is versioned
 * inside the table (GetApi(ORT_API_VERSION)), and newer onnxruntime releases serve older API versions, so a
 * newer target works; an older one refuses in GetApi.
 *
 * The nemo2sherpa_ort_shim_* functions let Python check that the target resolved and count forwarded calls, which
 * is the evidence that sherpa-onnx really went through this library.
 *
 * Package data, compiled on demand by build_shim(); never commit a compiled copy.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef NEMO2SHERPA_ORT_TARGET
#define NEMO2SHERPA_ORT_TARGET ""
#endif

/* onnxruntime_c_api.h: struct OrtApiBase { const OrtApi *(*GetApi)(uint32_t); const char *(*GetVersionString)(void); }
 * Only its layout matters here, and it has been frozen since onnxruntime 1.0. */
typedef struct OrtApiBase {
  const void *(*GetApi)(unsigned int version);
  const char *(*GetVersionString)(void);
} OrtApiBase;
typedef const OrtApiBase *(*ort_get_api_base_fn)(void);

static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;
static void *target_handle;
static ort_get_api_base_fn target_get_api_base;
static char target_path[4096];
static char resolve_error[sizeof target_path + 1024];
static unsigned long forwarded_calls;

static void resolve(void) {
  const char *path = getenv("NEMO2SHERPA_ORT_TARGET");
  if (path == NULL || path[0] == '\0') path = NEMO2SHERPA_ORT_TARGET;
  snprintf(target_path, sizeof target_path, "%s", path);
  if (target_path[0] == '\0') {
    snprintf(resolve_error, sizeof resolve_error,
             "no target onnxruntime: build with -DNEMO2SHERPA_ORT_TARGET or set NEMO2SHERPA_ORT_TARGET");
    return;
  }
  /* RTLD_LOCAL: the target's own symbols (OrtGetApiBase@VERS_<its version>) stay out of the global scope. The
   * target finds its provider libraries (libonnxruntime_providers_*.so) next to itself. */
  target_handle = dlopen(target_path, RTLD_NOW | RTLD_LOCAL);
  if (target_handle == NULL) {
    const char *why = dlerror();
    snprintf(resolve_error, sizeof resolve_error, "dlopen(%s) failed: %s", target_path, why ? why : "?");
    return;
  }
  dlerror();
  void *symbol = dlsym(target_handle, "OrtGetApiBase");
  if (symbol == NULL) {
    const char *why = dlerror();
    snprintf(resolve_error, sizeof resolve_error, "%s has no OrtGetApiBase: %s", target_path, why ? why : "?");
    return;
  }
  memcpy(&target_get_api_base, &symbol, sizeof symbol);
}

/* 1 when the target is loaded and OrtGetApiBase found, else 0 (then see nemo2sherpa_ort_shim_error). */
int nemo2sherpa_ort_shim_resolve(void) {
  pthread_once(&resolve_once, resolve);
  return target_get_api_base != NULL;
}

const char *nemo2sherpa_ort_shim_error(void) {
  pthread_once(&resolve_once, resolve);
  return resolve_error;
}

const char *nemo2sherpa_ort_shim_target(void) {
  pthread_once(&resolve_once, resolve);
  return target_path;
}

/* The target's version string, without counting as a forwarded call; "" when unresolved. */
const char *nemo2sherpa_ort_shim_target_version(void) {
  if (!nemo2sherpa_ort_shim_resolve()) return "";
  const OrtApiBase *base = target_get_api_base();
  return base != NULL && base->GetVersionString != NULL ? base->GetVersionString() : "";
}

/* How many times OrtGetApiBase went through this library (that is, was called by sherpa-onnx or other users). */
unsigned long nemo2sherpa_ort_shim_calls(void) { return __atomic_load_n(&forwarded_calls, __ATOMIC_RELAXED); }

const OrtApiBase *OrtGetApiBase(void) {
  if (!nemo2sherpa_ort_shim_resolve()) {
    /* Returning NULL would only move the crash into sherpa-onnx; say why instead. */
    fprintf(stderr, "nemo2sherpa onnxruntime shim: %s\n", resolve_error);
    abort();
  }
  __atomic_add_fetch(&forwarded_calls, 1, __ATOMIC_RELAXED);
  return target_get_api_base();
}
