// Subcommands whose capability has not landed yet. Each one parses its
// arguments like the finished command will and then says plainly that it is
// not available, rather than pretending.
#include "commands.hpp"

namespace ssm::cli {

}  // namespace ssm::cli
