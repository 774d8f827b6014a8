# Writes a C++ source file that holds the bytes of a file as an array:
#   cmake -DIN=file -DOUT=source.cpp -DSYMBOL=name -P embed_file.cmake
# defines `extern const unsigned char SYMBOL[]` and `extern const std::size_t
# SYMBOL_size` (the array has one trailing zero byte beyond SYMBOL_size).
# The bytes go in as string literals, which compilers take in far less time
# and memory than a list of integers.
if(NOT IN OR NOT OUT OR NOT SYMBOL)
  message(FATAL_ERROR "embed_file.cmake: give -DIN=, -DOUT= and -DSYMBOL=")
endif()
if(NOT EXISTS "${IN}")
  message(FATAL_ERROR "embed_file.cmake: '${IN}' does not exist")
endif()
file(SIZE "${IN}" bytes)
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" escaped "${hex}")
# Lines of 32 bytes (128 characters of \xNN).
string(REGEX REPLACE "(................................................................................................................................)"
       "\\1\"\n\"" escaped "${escaped}")
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by cmake/embed_file.cmake; do not edit.\n"
  "#include <cstddef>\n\n"
  "extern const unsigned char ${SYMBOL}[];\n"
  "extern const std::size_t ${SYMBOL}_size;\n"
  "alignas(16) const unsigned char ${SYMBOL}[] =\n\"${escaped}\";\n"
  "const std::size_t ${SYMBOL}_size = ${bytes};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
