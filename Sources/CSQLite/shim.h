#ifndef RECOTAP_CSQLITE_SHIM_H
#define RECOTAP_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
