/* Native callables for the hottest in-process calls, compiled into the cffi
 * extension (admit_build.py appends this file to its C source).
 *
 * A cffi call converts every argument through its type table and a str key
 * must first be encoded into a new bytes object; together that is most of
 * the cost of KeyedLimiter.hit(key). These callables take the arguments as
 * the interpreter passes them (vectorcall), read a str key's UTF-8 form in
 * place, and call libadmit directly: every decision is still libadmit's.
 *
 * Below them: the submission and completion of asynchronous Redis tries.
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

/* --- asynchronous Redis tries ----------------------------------------------
 *
 * RedisLimiter.try_acquire_async's submission and completion, without a
 * Python waiter object per call: submit(key, cost, future, notify) starts
 * admit_redis_limiter_try_cb with a pending record that holds the future;
 * drain(notify, limit), on the loop thread, resolves the futures of the
 * completions it finds (with a Decision, or the negative status as an
 * int) and hands the others (plain waiters, see _loop.py) back to Python.
 *
 * A future already done when its completion arrives belongs to a caller
 * that gave up (cancelled): if Redis admitted units for it, on_lost(key,
 * cost) gives them back. The caller itself gives back a decision that was
 * set on its future before it could resume (CPython gh-90155), so each
 * admitted unit is given back exactly once. */

/* Completion ids of pending records: their address with the top bit set
 * (waiter ids from _loop.py count up from 1). */
#define ADMIT_PY_PENDING_BIT (UINT64_C(1) << 63)

typedef struct {
  admit_notify_decision_t nd; /* first: what the C callback fills */
  PyObject* future;
  PyObject* key;     /* bytes */
  PyObject* on_lost; /* on_lost(key, cost) */
  PyObject* decision_type;
  PyObject* keep; /* the limiter object: its C limiter serves the call */
  uint64_t cost;
} admit_py_pending_t;

typedef struct {
  PyObject ob_base;
  vectorcallfunc vectorcall;
  admit_redis_limiter_t* handle;
  PyObject* owner;   /* the cffi pointer whose finalizer frees handle */
  PyObject* on_lost; /* given to every pending record */
  PyObject* decision_type;
} admit_py_submit_t;

static PyObject* admit_py_str_done;
static PyObject* admit_py_str_set_result;
static PyObject* admit_py_decision_fields[6];

static void admit_py_pending_free(admit_py_pending_t* p) {
  Py_XDECREF(p->future);
  Py_XDECREF(p->key);
  Py_XDECREF(p->on_lost);
  Py_XDECREF(p->decision_type);
  Py_XDECREF(p->keep);
  PyMem_RawFree(p);
}

/* submit(key: bytes, cost: int, future, notify_address: int, keep) -> int:
 * 0, or the negative code of a call that did not start. keep (the limiter
 * object) is held until the completion: the C limiter must outlive it. */
static PyObject* admit_py_submit_call(PyObject* self, PyObject* const* args,
                                      size_t nargsf, PyObject* kwnames) {
  admit_py_submit_t* s = (admit_py_submit_t*)self;
  if (PyVectorcall_NARGS(nargsf) != 5 || kwnames != NULL) {
    PyErr_SetString(PyExc_TypeError,
                    "submit() takes key, cost, future, notify and keep");
    return NULL;
  }
  if (!PyBytes_CheckExact(args[0])) {
    PyErr_SetString(PyExc_TypeError, "submit(): key must be bytes");
    return NULL;
  }
  if (!PyLong_Check(args[1]) || PyBool_Check(args[1])) {
    PyErr_Format(PyExc_TypeError, "cost must be an int, not %s",
                 Py_TYPE(args[1])->tp_name);
    return NULL;
  }
  unsigned long long cost = PyLong_AsUnsignedLongLong(args[1]);
  if (cost == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  void* notify = PyLong_AsVoidPtr(args[3]);
  if (notify == NULL) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "submit(): notify is NULL");
    return NULL;
  }
  admit_py_pending_t* p = PyMem_RawCalloc(1, sizeof(*p));
  if (p == NULL) return PyErr_NoMemory();
  p->nd.node.notify = (admit_notify_t*)notify;
  p->nd.node.id = ADMIT_PY_PENDING_BIT | (uint64_t)(uintptr_t)p;
  p->cost = cost;
  Py_INCREF(args[2]);
  p->future = args[2];
  Py_INCREF(args[0]);
  p->key = args[0];
  Py_INCREF(s->on_lost);
  p->on_lost = s->on_lost;
  Py_INCREF(s->decision_type);
  p->decision_type = s->decision_type;
  Py_INCREF(args[4]);
  p->keep = args[4];
  /* Queues the call (a mutex at most; never waits for Redis). */
  int rc = admit_redis_limiter_try_cb(s->handle, PyBytes_AS_STRING(args[0]),
                                      (size_t)PyBytes_GET_SIZE(args[0]), cost,
                                      admit_notify_decision_cb, &p->nd);
  if (rc < 0) admit_py_pending_free(p);
  return PyLong_FromLong(rc);
}

/* A Decision (the Python class, __slots__) from the C decision. */
static PyObject* admit_py_decision(PyObject* type, const admit_decision_t* d) {
  PyObject* o = ((PyTypeObject*)type)->tp_alloc((PyTypeObject*)type, 0);
  if (o == NULL) return NULL;
  PyObject* v[6] = {PyBool_FromLong(d->allowed),
                    PyLong_FromUnsignedLongLong(d->limit),
                    PyLong_FromUnsignedLongLong(d->remaining),
                    PyLong_FromUnsignedLongLong(d->retry_after_ns),
                    PyLong_FromUnsignedLongLong(d->reset_after_ns),
                    PyLong_FromUnsignedLong(d->limiting)};
  int bad = 0;
  for (int i = 0; i < 6; i++) {
    if (v[i] == NULL ||
        PyObject_SetAttr(o, admit_py_decision_fields[i], v[i]) < 0)
      bad = 1;
    Py_XDECREF(v[i]);
  }
  if (bad) Py_CLEAR(o);
  return o;
}

/* Resolves one pending record's future, or gives its units back. */
static void admit_py_pending_complete(admit_py_pending_t* p, int status) {
  PyObject* done = PyObject_CallMethodNoArgs(p->future, admit_py_str_done);
  if (done == NULL) {
    PyErr_WriteUnraisable(p->future);
  } else if (done == Py_False) {
    PyObject* res = status >= 0
                        ? admit_py_decision(p->decision_type, &p->nd.decision)
                        : PyLong_FromLong(status);
    PyObject* r = res == NULL ? NULL
                              : PyObject_CallMethodOneArg(
                                    p->future, admit_py_str_set_result, res);
    if (r == NULL) PyErr_WriteUnraisable(p->future);
    Py_XDECREF(r);
    Py_XDECREF(res);
  } else if (status >= 0 && p->nd.decision.allowed) {
    PyObject* r = PyObject_CallFunction(p->on_lost, "OK", p->key,
                                        (unsigned long long)p->cost);
    if (r == NULL) PyErr_WriteUnraisable(p->on_lost);
    Py_XDECREF(r);
  }
  Py_XDECREF(done);
  admit_py_pending_free(p);
}

/* drain(notify_address, limit) -> (pending records completed, [(id,
 * status, value) of the other completions], completions taken). Takes at
 * most about limit completions. */
static PyObject* admit_py_drain(PyObject* module, PyObject* const* args,
                                Py_ssize_t nargs) {
  (void)module;
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "drain() takes notify and limit");
    return NULL;
  }
  admit_notify_t* n = PyLong_AsVoidPtr(args[0]);
  Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
  if ((n == NULL || limit < 0) && PyErr_Occurred()) return NULL;
  if (n == NULL) {
    PyErr_SetString(PyExc_ValueError, "drain(): notify is NULL");
    return NULL;
  }
  PyObject* rest = PyList_New(0);
  if (rest == NULL) return NULL;
  admit_completion_t buf[64];
  Py_ssize_t taken = 0, native = 0;
  while (taken < limit) {
    int k = admit_notify_drain(n, buf, 64);
    if (k <= 0) break;
    for (int i = 0; i < k; i++) {
      if (buf[i].id & ADMIT_PY_PENDING_BIT) {
        admit_py_pending_complete(
            (admit_py_pending_t*)(uintptr_t)(buf[i].id & ~ADMIT_PY_PENDING_BIT),
            buf[i].status);
        native++;
        continue;
      }
      PyObject* t =
          Py_BuildValue("(KKi)", (unsigned long long)buf[i].id,
                        (unsigned long long)buf[i].value, buf[i].status);
      if (t == NULL || PyList_Append(rest, t) < 0) {
        /* Out of memory: the waiter is lost, never the loop. */
        PyErr_WriteUnraisable(args[0]);
      }
      Py_XDECREF(t);
    }
    taken += k;
    if (k < 64) break;
  }
  return Py_BuildValue("(nNn)", native, rest, taken);
}

static int admit_py_submit_traverse(PyObject* self, visitproc visit,
                                    void* arg) {
  admit_py_submit_t* s = (admit_py_submit_t*)self;
  Py_VISIT(s->owner);
  Py_VISIT(s->on_lost);
  Py_VISIT(s->decision_type);
  return 0;
}

static int admit_py_submit_clear(PyObject* self) {
  admit_py_submit_t* s = (admit_py_submit_t*)self;
  Py_CLEAR(s->owner);
  Py_CLEAR(s->on_lost);
  Py_CLEAR(s->decision_type);
  return 0;
}

static void admit_py_submit_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  admit_py_submit_clear(self);
  Py_TYPE(self)->tp_free(self);
}

static PyTypeObject admit_py_submit_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "admit._native.RedisTry",
    .tp_basicsize = sizeof(admit_py_submit_t),
    .tp_flags =
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(admit_py_submit_t, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = admit_py_submit_traverse,
    .tp_clear = admit_py_submit_clear,
    .tp_dealloc = admit_py_submit_dealloc,
};

/* redis_try(address, owner, on_lost, decision_type): a submit callable for
 * the admit_redis_limiter_t at address (an int), kept alive by owner. */
static PyObject* admit_py_redis_try_new(PyObject* module, PyObject* const* args,
                                        Py_ssize_t nargs) {
  (void)module;
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError,
                    "redis_try() takes address, owner, on_lost and "
                    "decision_type");
    return NULL;
  }
  void* handle = PyLong_AsVoidPtr(args[0]);
  if (handle == NULL) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "redis_try(): address is NULL");
    return NULL;
  }
  if (!PyCallable_Check(args[2]) || !PyType_Check(args[3])) {
    PyErr_SetString(PyExc_TypeError,
                    "redis_try(): on_lost must be callable and "
                    "decision_type a type");
    return NULL;
  }
  admit_py_submit_t* s =
      PyObject_GC_New(admit_py_submit_t, &admit_py_submit_type);
  if (s == NULL) return NULL;
  s->vectorcall = admit_py_submit_call;
  s->handle = handle;
  Py_INCREF(args[1]);
  s->owner = args[1];
  Py_INCREF(args[2]);
  s->on_lost = args[2];
  Py_INCREF(args[3]);
  s->decision_type = args[3];
  PyObject_GC_Track((PyObject*)s);
  return (PyObject*)s;
}

static PyMethodDef admit_py_native_methods[] = {
    {"hit", (PyCFunction)(void (*)(void))admit_py_hit_new, METH_FASTCALL,
     "hit(kind, address, owner, fallback, fail): a native hit callable."},
    {"redis_try", (PyCFunction)(void (*)(void))admit_py_redis_try_new,
     METH_FASTCALL,
     "redis_try(address, owner, on_lost, decision_type): a submit "
     "callable for asynchronous tries."},
    {"drain", (PyCFunction)(void (*)(void))admit_py_drain, METH_FASTCALL,
     "drain(notify, limit): completes pending tries, returns the rest."},
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
  if (PyType_Ready(&admit_py_hit_type) < 0 ||
      PyType_Ready(&admit_py_submit_type) < 0)
    goto fail;
  static const char* const fields[6] = {"allowed",        "limit",
                                        "remaining",      "retry_after_ns",
                                        "reset_after_ns", "limiting"};
  for (int i = 0; i < 6; i++)
    if ((admit_py_decision_fields[i] = PyUnicode_InternFromString(fields[i])) ==
        NULL)
      goto fail;
  if ((admit_py_str_done = PyUnicode_InternFromString("done")) == NULL ||
      (admit_py_str_set_result = PyUnicode_InternFromString("set_result")) ==
          NULL)
    goto fail;
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
