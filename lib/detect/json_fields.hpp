// The detector's configs are read with the library's one strict JSON reader.
#pragma once
#include "../common/json_fields.hpp"
