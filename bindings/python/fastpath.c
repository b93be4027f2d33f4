/* Native callables for the hottest in-process calls, compiled into the cffi
 * extension (admit_build.py appends this file to its C source).
 *
 * A cffi call converts every argument through its type table and a str key
 * must first be encoded into a new bytes object; together that is most of
 * the cost of KeyedLimiter.hit(key). These callables take the arguments as
 * the interpreter passes them (vectorcall), read a str key's UTF-8 form in
 * place, and call libadmit directly: every decision is still libadmit's.
 *
 * Only the commonest shapes are handled here: hit(key) on a keyed limiter
 * (first tier, cost 1) and hit() / hit(cost) on a limiter. Every other
 * other shape is passed unchanged to the Python method given as the
 * fallback, which validates it; an error from libadmit goes to the fail
 * callable, with the argument and the code, which raises it (calling the
 * fallback instead would repeat the call and count it twice).
 *
 * They keep the GIL: the calls never wait (only limiters on the real clock
 * get one; a Python clock's callback needs the GIL). cffi cannot return
 * Python objects, so admit_py_fast_native_init() (GIL kept, see the
 * ADMIT_PY_FAST_PREFIX wrapper in admit_build.py) registers a small module,
 * admit._native, in sys.modules. */

#include <stdint.h>

enum { ADMIT_PY_HIT_KEYED, ADMIT_PY_HIT_LIMITER };

typedef struct {
  PyObject ob_base;
  vectorcallfunc vectorcall;
  void* handle;       /* admit_keyed_t* or admit_limiter_t* */
  PyObject* owner;    /* the cffi pointer whose finalizer frees handle */
  PyObject* fallback; /* the full method: every other argument shape */
  PyObject* fail;     /* fail(argument, code): raises libadmit's error */
} admit_py_hit_t;

static PyObject* admit_py_hit_fallback(admit_py_hit_t* h, PyObject* const* args,
                                       size_t nargsf, PyObject* kwnames) {
  return PyObject_Vectorcall(h->fallback, args, nargsf, kwnames);
}

static PyObject* admit_py_hit_fail(admit_py_hit_t* h, PyObject* arg, int rc) {
  return PyObject_CallFunction(h->fail, "Oi", arg, rc);
}

static PyObject* admit_py_keyed_hit_call(PyObject* self, PyObject* const* args,
                                         size_t nargsf, PyObject* kwnames) {
  admit_py_hit_t* h = (admit_py_hit_t*)self;
  if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL) {
    PyObject* key = args[0];
    const char* k = NULL;
    Py_ssize_t len = 0;
    if (PyUnicode_CheckExact(key)) {
      k = PyUnicode_AsUTF8AndSize(key, &len);
      if (k == NULL) PyErr_Clear(); /* the fallback raises it again */
    } else if (PyBytes_CheckExact(key)) {
      k = PyBytes_AS_STRING(key);
      len = PyBytes_GET_SIZE(key);
    }
    if (k != NULL) {
      admit_decision_t d;
      int rc =
          admit_keyed_try((admit_keyed_t*)h->handle, 0, k, (size_t)len, 1, &d);
      if (rc < 0) return admit_py_hit_fail(h, key, rc);
      return PyBool_FromLong(d.allowed);
    }
  }
  return admit_py_hit_fallback(h, args, nargsf, kwnames);
}

static PyObject* admit_py_limiter_hit_call(PyObject* self,
                                           PyObject* const* args, size_t nargsf,
                                           PyObject* kwnames) {
  admit_py_hit_t* h = (admit_py_hit_t*)self;
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  uint64_t cost = 1;
  int ok = kwnames == NULL && n <= 1;
  if (ok && n == 1) {
    /* Exact ints only: bool and other int-likes get the fallback's checks. */
    ok = PyLong_CheckExact(args[0]);
    if (ok) {
      unsigned long long c = PyLong_AsUnsignedLongLong(args[0]);
      ok = !(c == (unsigned long long)-1 && PyErr_Occurred());
      if (!ok) PyErr_Clear();
      cost = c;
    }
  }
  if (ok) {
    admit_decision_t d;
    int rc = admit_limiter_try((admit_limiter_t*)h->handle, cost, &d);
    if (rc >= 0) return PyBool_FromLong(d.allowed);
    PyObject* arg = PyLong_FromUnsignedLongLong(cost);
    if (arg == NULL) return NULL;
    PyObject* r = admit_py_hit_fail(h, arg, rc);
    Py_DECREF(arg);
    return r;
  }
  return admit_py_hit_fallback(h, args, nargsf, kwnames);
}

static int admit_py_hit_traverse(PyObject* self, visitproc visit, void* arg) {
  admit_py_hit_t* h = (admit_py_hit_t*)self;
  Py_VISIT(h->owner);
  Py_VISIT(h->fallback);
  Py_VISIT(h->fail);
  return 0;
}

static int admit_py_hit_clear(PyObject* self) {
  admit_py_hit_t* h = (admit_py_hit_t*)self;
  Py_CLEAR(h->owner);
  Py_CLEAR(h->fallback);
  Py_CLEAR(h->fail);
  return 0;
}

static void admit_py_hit_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  admit_py_hit_clear(self);
  Py_TYPE(self)->tp_free(self);
}

/* The fallback's docstring and name, so help(lim.hit) reads as the
 * method's. */
static PyObject* admit_py_hit_get_doc(PyObject* self, void* unused) {
  (void)unused;
  return PyObject_GetAttrString(((admit_py_hit_t*)self)->fallback, "__doc__");
}

static PyObject* admit_py_hit_get_name(PyObject* self, void* unused) {
  (void)unused;
  return PyObject_GetAttrString(((admit_py_hit_t*)self)->fallback, "__name__");
}

static PyObject* admit_py_hit_repr(PyObject* self) {
  admit_py_hit_t* h = (admit_py_hit_t*)self;
  return PyUnicode_FromFormat("<admit native hit over %R>", h->fallback);
}

static PyGetSetDef admit_py_hit_getset[] = {
    {"__doc__", admit_py_hit_get_doc, NULL, NULL, NULL},
    {"__name__", admit_py_hit_get_name, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject admit_py_hit_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "admit._native.Hit",
    .tp_basicsize = sizeof(admit_py_hit_t),
    .tp_flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(admit_py_hit_t, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = admit_py_hit_traverse,
    .tp_clear = admit_py_hit_clear,
    .tp_dealloc = admit_py_hit_dealloc,
    .tp_repr = admit_py_hit_repr,
    .tp_getset = admit_py_hit_getset,
};

/* hit(kind, address, owner, fallback, fail): a callable over the C object at
 * address (an int), kept alive by owner. */
static PyObject* admit_py_hit_new(PyObject* module, PyObject* const* args,
                                  Py_ssize_t nargs) {
  (void)module;
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError,
                    "hit() takes kind, address, owner, fallback and fail");
    return NULL;
  }
  long kind = PyLong_AsLong(args[0]);
  if (kind == -1 && PyErr_Occurred()) return NULL;
  if (kind != ADMIT_PY_HIT_KEYED && kind != ADMIT_PY_HIT_LIMITER) {
    PyErr_SetString(PyExc_ValueError, "hit(): unknown kind");
    return NULL;
  }
  void* handle = PyLong_AsVoidPtr(args[1]);
  if (handle == NULL) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "hit(): address is NULL");
    return NULL;
  }
  if (!PyCallable_Check(args[3]) || !PyCallable_Check(args[4])) {
    PyErr_SetString(PyExc_TypeError,
                    "hit(): fallback and fail must be callable");
    return NULL;
  }
  admit_py_hit_t* h = PyObject_GC_New(admit_py_hit_t, &admit_py_hit_type);
  if (h == NULL) return NULL;
  h->vectorcall = kind == ADMIT_PY_HIT_KEYED ? admit_py_keyed_hit_call
                                             : admit_py_limiter_hit_call;
  h->handle = handle;
  Py_INCREF(args[2]);
  h->owner = args[2];
  Py_INCREF(args[3]);
  h->fallback = args[3];
  Py_INCREF(args[4]);
  h->fail = args[4];
  PyObject_GC_Track((PyObject*)h);
  return (PyObject*)h;
}

static PyMethodDef admit_py_native_methods[] = {
    {"hit", (PyCFunction)(void (*)(void))admit_py_hit_new, METH_FASTCALL,
     "hit(kind, address, owner, fallback, fail): a native hit callable."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef admit_py_native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "admit._native",
    .m_doc = "Native fast paths for admit's in-process limiters.",
    .m_size = -1,
    .m_methods = admit_py_native_methods,
};

/* Registers admit._native in sys.modules (once). Returns 0, or -1 with a
 * Python error printed (cffi cannot raise it). */
static int admit_py_fast_native_init(void) {
  PyObject* modules = PyImport_GetModuleDict();
  if (PyDict_GetItemString(modules, "admit._native") != NULL) return 0;
  if (PyType_Ready(&admit_py_hit_type) < 0) goto fail;
  PyObject* m = PyModule_Create(&admit_py_native_module);
  if (m == NULL) goto fail;
  int rc = PyModule_AddIntConstant(m, "KEYED", ADMIT_PY_HIT_KEYED) |
           PyModule_AddIntConstant(m, "LIMITER", ADMIT_PY_HIT_LIMITER) |
           PyDict_SetItemString(modules, "admit._native", m);
  Py_DECREF(m);
  if (rc == 0) return 0;
fail:
  PyErr_Print();
  return -1;
}
