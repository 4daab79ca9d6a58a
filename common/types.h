// The vocabulary types live in the public include/dtx/types.h (the C++
// client's users see them); internal code keeps including this file.
#pragma once

#include "dtx/types.h"
