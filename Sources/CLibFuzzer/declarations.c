// CLibFuzzer only declares libFuzzer's driver (include/CLibFuzzer.h); SwiftPM wants a source file.
#include "CLibFuzzer.h"
