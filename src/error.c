/* SPDX-License-Identifier: MIT */
/* Error codes, names and messages, and the per-thread last error. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* The sentence is kept per thread so concurrent failures never mix. */
static _Thread_local char last_message[256];
static _Thread_local int last_code;

const char *weft_strerror(int code) {
  if (code == 0) return "success";
  switch (code) {
#define WEFT__ERR_MSG(name, value, msg) \
  case (value):                         \
    return msg;
    WEFT_ERRNO_MAP(WEFT__ERR_MSG)
#undef WEFT__ERR_MSG
  }
  if (code < 0 && code > -4000) return strerror(-code);
  return "unknown error";
}

const char *weft_err_name(int code) {
  switch (code) {
#define WEFT__ERR_NAME(name, value, msg) \
  case (value):                          \
    return "WEFT_" #name;
    WEFT_ERRNO_MAP(WEFT__ERR_NAME)
#undef WEFT__ERR_NAME
  }
  /* An errno weft does not return itself keeps its errno name; anything
   * else is named by its number. */
  static _Thread_local char name[48];
  const char *e = code < 0 && code > -4000 ? strerrorname_np(-code) : NULL;
  if (e != NULL)
    snprintf(name, sizeof name, "WEFT_%s", e);
  else
    snprintf(name, sizeof name, "code %d", code);
  return name;
}

const char *weft_last_error(void) { return last_message; }

int weft_last_error_code(void) { return last_code; }

int weft__error(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_message, sizeof last_message, fmt, ap);
  va_end(ap);
  last_code = code;
  return code;
}

#define WEFT__STR(x) #x
#define WEFT__XSTR(x) WEFT__STR(x)

const char *weft_version(void) {
  return WEFT__XSTR(WEFT_VERSION_MAJOR) "." WEFT__XSTR(WEFT_VERSION_MINOR) "." WEFT__XSTR(
      WEFT_VERSION_PATCH);
}
