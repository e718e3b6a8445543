// Sets an environment variable (or unsets it, for nullptr) and restores it afterwards; a
// broker started meanwhile inherits it.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace token_broker::testing {

class scoped_env {
 public:
  scoped_env(std::string name, const char* value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) previous_ = old;
    set(value);
  }
  ~scoped_env() { set(previous_ ? previous_->c_str() : nullptr); }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  void set(const char* value) {
    if (value) {
      ::setenv(name_.c_str(), value, 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }

  std::string name_;
  std::optional<std::string> previous_;
};

}  // namespace token_broker::testing
