// Status and Result<T> live in the public include/dtx/status.h (the C++
// client's users see them); internal code includes this file, which also
// brings DTX_CHECK as it always did.
#pragma once

#include "common/check.h"
#include "dtx/status.h"
