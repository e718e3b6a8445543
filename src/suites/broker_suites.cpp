// The broker's third-party side (SPEC §3–§7): providers' and suites' credentials, the pushed
// suite_ticket, and the corps that authorize a suite, statically in the config or by callback.
// A corp that arrives by callback is kept in the store with its permanent code sealed under the
// suite's store key, so that every replica, and this one after a restart, serves it too.
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "token_broker/broker.hpp"
#include "token_broker/core/secret_digest.hpp"
#include "token_broker/credentials/source.hpp"
#include "token_broker/upstream/upstream_answer.hpp"

namespace token_broker {
namespace {

// An auth code is good for 10 minutes and one exchange: a failed exchange is tried again a few
// times, quickly, in case the failure was upstream's moment.
constexpr int exchange_attempts = 3;
constexpr std::chrono::seconds exchange_pause{1};

struct permanent_code_answer {
  std::string corpid;
  std::string permanent_code;
};

// get_permanent_code's answer: {"errcode":0, "permanent_code", "auth_corp_info":{"corpid"}}.
std::variant<permanent_code_answer, fetch_failure> read_permanent_code(
    const upstream_response& answer) {
  const auto parsed = nlohmann::json::parse(answer.body, nullptr, /*allow_exceptions=*/false);
  if (answer.status != 200 || !parsed.is_object()) {
    return fetch_failure{failure_class::transient, local_failure_errcode,
                         "get_permanent_code answered HTTP " + std::to_string(answer.status) +
                             " without a JSON object"};
  }
  const auto errcode = parsed.value("errcode", 0);
  if (errcode != 0) {
    return fetch_failure{classify_errcode(errcode), errcode, parsed.value("errmsg", "")};
  }
  const auto string_at = [](const nlohmann::json& object, const char* name) {
    const auto found = object.is_object() ? object.find(name) : object.end();
    return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
  };
  auto code = string_at(parsed, "permanent_code");
  auto corpid = string_at(parsed.value("auth_corp_info", nlohmann::json::object()), "corpid");
  if (code.empty() || corpid.empty()) {
    return fetch_failure{failure_class::transient, local_failure_errcode,
                         "get_permanent_code answered without permanent_code and "
                         "auth_corp_info.corpid"};
  }
  return permanent_code_answer{std::move(corpid), std::move(code)};
}

bool same_suite(const suite_config& a, const suite_config& b) {
  const auto same_callback = [](const auto& x, const auto& y) {
    if (!x || !y) return !x && !y;
    return x->token == y->token && x->encoding_aes_key == y->encoding_aes_key;
  };
  const auto same_corps = [](const auto& x, const auto& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(), [](const auto& l, const auto& r) {
      return l.corpid == r.corpid && l.permanent_code == r.permanent_code;
    });
  };
  return a.suite_id == b.suite_id && a.is_template == b.is_template &&
         a.suite_secret == b.suite_secret && same_callback(a.callback, b.callback) &&
         a.store_key == b.store_key && same_corps(a.corps, b.corps);
}

}  // namespace

provider_entry broker::make_provider(std::shared_ptr<const provider_config> provider) {
  provider_entry entry{.provider = provider, .secret_digest = sha256(provider->provider_secret)};
  entry.token = std::make_shared<credential_refresher>(
      engine_, credential_id{credential_kind::provider_token, provider->id},
      std::make_unique<provider_token_source>(provider));
  return entry;
}

suite_entry broker::make_suite(std::shared_ptr<const suite_config> suite) {
  suite_entry entry{.suite = suite, .secret_digest = sha256(suite->suite_secret)};
  if (suite->callback) {
    entry.callback =
        std::make_shared<const msg_crypt>(suite->callback->token, suite->callback->encoding_aes_key,
                                          "suites." + suite->id + ".callback.encoding_aes_key");
  }
  if (!suite->store_key.empty()) {
    entry.store_key = std::make_shared<const at_rest_key>(
        suite->store_key, "suites." + suite->id + ".store_key_file");
  }
  entry.ticket = std::make_shared<credential_refresher>(
      engine_, credential_id{credential_kind::suite_ticket, suite->id},
      std::make_unique<pushed_source>());
  entry.token = std::make_shared<credential_refresher>(
      engine_, credential_id{credential_kind::suite_token, suite->id},
      std::make_unique<suite_token_source>(suite));
  for (const auto& corp : suite->corps) {
    entry.corps.emplace(
        corp.corpid, corp_entry{.corpid = corp.corpid,
                                .origin = corp_origin::config,
                                .code_digest = sha256(corp.permanent_code),
                                .token = make_corp_token(entry, corp.corpid, corp.permanent_code)});
  }
  return entry;
}

// A 代开发 template's corp gets its token from gettoken, its permanent code as the secret.
std::shared_ptr<credential_refresher> broker::make_corp_token(const suite_entry& suite,
                                                              std::string_view corpid,
                                                              std::string_view permanent_code) {
  std::unique_ptr<credential_source> source;
  if (suite.suite->is_template) {
    source = std::make_unique<gettoken_source>(corpid, permanent_code);
  } else {
    source = std::make_unique<corp_token_source>(suite.suite->id, std::string(corpid),
                                                 std::string(permanent_code));
  }
  return std::make_shared<credential_refresher>(
      engine_, credential_id{credential_kind::corp_token, corp_scope(suite.suite->id, corpid)},
      std::move(source));
}

void broker::start_third_party() {
  const auto set = third_party();
  for (const auto& [id, provider] : set->providers) engine_.add(provider.token);
  for (const auto& [id, suite] : set->suites) {
    engine_.add(suite.ticket);
    engine_.add(suite.token);
    for (const auto& [corpid, corp] : suite.corps) engine_.add(corp.token);
  }
  store_->watch_corps([this](const credential_id& corp, bool added) {
    spawn("following another replica's corp",
          [this, corp, added] { return corp_changed_elsewhere(corp, added); });
  });
}

// Providers and suites whose settings stay keep their credentials (and a suite its corps);
// changed ones start over; the store's authorized corps are then looked at again.
void broker::reload_third_party(const config& next) {
  change_third_party([&](third_party_set& set) {
    third_party_set updated;
    for (const auto& provider : next.providers) {
      const auto* kept = set.provider(provider.id);
      if (kept && kept->provider->corpid == provider.corpid &&
          kept->provider->provider_secret == provider.provider_secret) {
        updated.providers.emplace(provider.id, *kept);
        continue;
      }
      auto entry = make_provider(std::make_shared<const provider_config>(provider));
      engine_.add(entry.token);
      updated.providers.emplace(provider.id, std::move(entry));
    }
    for (const auto& suite : next.suites) {
      const auto* kept = set.suite(suite.id);
      if (kept && same_suite(*kept->suite, suite)) {
        updated.suites.emplace(suite.id, *kept);
        continue;
      }
      auto entry = make_suite(std::make_shared<const suite_config>(suite));
      engine_.add(entry.ticket);
      engine_.add(entry.token);
      for (const auto& [corpid, corp] : entry.corps) engine_.add(corp.token);
      if (kept) {
        for (const auto& [corpid, corp] : kept->corps) {
          if (!entry.corp(corpid)) engine_.remove(corp.token->id());
        }
      }
      updated.suites.emplace(suite.id, std::move(entry));
    }
    for (const auto& [id, provider] : set.providers) {
      if (!updated.provider(id)) engine_.remove(provider.token->id());
    }
    for (const auto& [id, suite] : set.suites) {
      if (updated.suite(id)) continue;
      engine_.remove(suite.ticket->id());
      engine_.remove(suite.token->id());
      for (const auto& [corpid, corp] : suite.corps) engine_.remove(corp.token->id());
    }
    set = std::move(updated);
  });
  spawn("loading authorized corps", [this] { return adopt_stored_corps(); });
}

void broker::change_third_party(const std::function<void(third_party_set&)>& change) {
  const std::lock_guard one_at_a_time(third_party_changes_);
  auto copy = std::make_shared<third_party_set>(*third_party());
  change(*copy);
  third_party_.store(std::move(copy));
}

void broker::spawn(const char* what, std::function<asio::awaitable<void>()> task) {
  asio::co_spawn(executor_, std::move(task), [what](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& error) {
      spdlog::error("{} failed unexpectedly: {}", what, error.what());
    }
  });
}

void broker::add_corp_here(const std::string& suite, const std::string& corpid,
                           const std::string& permanent_code, corp_origin origin) {
  change_third_party([&](third_party_set& set) {
    const auto found = set.suites.find(suite);
    if (found == set.suites.end()) return;
    auto& entry = found->second;
    const auto digest = sha256(permanent_code);
    if (const auto* held = entry.corp(corpid); held && digests_equal(held->code_digest, digest)) {
      return;  // known already, with this code
    }
    corp_entry corp{.corpid = corpid,
                    .origin = origin,
                    .code_digest = digest,
                    .token = make_corp_token(entry, corpid, permanent_code)};
    engine_.add(corp.token);  // replaces the token of an older code
    entry.corps.insert_or_assign(corpid, std::move(corp));
    spdlog::info("suite={} corp={} authorized ({})", suite, corpid, to_string(origin));
  });
}

void broker::remove_corp_here(const std::string& suite, const std::string& corpid) {
  change_third_party([&](third_party_set& set) {
    const auto found = set.suites.find(suite);
    if (found == set.suites.end()) return;
    const auto corp = found->second.corps.find(corpid);
    if (corp == found->second.corps.end()) return;
    engine_.remove(corp->second.token->id());
    found->second.corps.erase(corp);
    spdlog::info("suite={} corp={} authorization cancelled: its token is gone", suite, corpid);
  });
}

void broker::authorize_corp(std::string suite, std::string auth_code) {
  spawn("exchanging an auth code",
        [this, suite = std::move(suite), auth_code = std::move(auth_code)]() mutable {
          return exchange_auth_code(std::move(suite), std::move(auth_code));
        });
}

void broker::cancel_corp(std::string suite, std::string corpid) {
  remove_corp_here(suite, corpid);
  spawn("removing a corp from the store", [this, suite, corpid]() -> asio::awaitable<void> {
    auto removal = store_->remove_corp(suite, corpid);
    if (!co_await std::move(removal)) {
      spdlog::warn(
          "suite={} corp={} the store could not be told of the cancellation; the other "
          "replicas keep the corp until they restart",
          suite, corpid);
    }
  });
}

asio::awaitable<void> broker::exchange_auth_code(std::string suite, std::string auth_code) {
  const auto set = third_party();
  const auto* entry = set->suite(suite);
  if (!entry) co_return;
  const auto token = entry->token;
  const auto store_key = entry->store_key;
  if (!store_key) co_return;  // the config requires one with a callback
  asio::steady_timer pause(executor_);
  std::optional<fetch_failure> failure;
  std::optional<std::string> rejected;  // the suite_access_token upstream refused
  for (int attempt = 1; attempt <= exchange_attempts; ++attempt) {
    if (attempt > 1) {
      pause.expires_after(exchange_pause * (attempt - 1));
      co_await pause.async_wait(asio::use_awaitable);
    }
    auto waiting = rejected ? token->invalidate(*std::exchange(rejected, std::nullopt))
                            : token->wait_for_token();
    const auto outcome = co_await std::move(waiting);
    if (!outcome.view) {
      failure = outcome.failure.value_or(
          fetch_failure{failure_class::transient, local_failure_errcode, "no suite_access_token"});
      continue;
    }
    co_await asio::dispatch(engine_.strand(), asio::use_awaitable);
    const auto upstream = engine_.upstream();
    std::string target = "/cgi-bin/service/get_permanent_code?suite_access_token=";
    percent_encode(target, outcome.view->current->value);
    const nlohmann::json body{{"auth_code", auth_code}};
    auto reservation = upstream->reserve();
    const auto slot = co_await std::move(reservation);
    auto call = upstream->call(slot, upstream_request{.method = http::verb::post,
                                                      .target = std::move(target),
                                                      .json_body = body.dump()});
    const auto answer = co_await std::move(call);
    co_await asio::dispatch(executor_, asio::use_awaitable);
    if (const auto* lost = std::get_if<fetch_failure>(&answer)) {
      failure = *lost;
      continue;
    }
    auto read = read_permanent_code(std::get<upstream_response>(answer));
    if (auto* refused = std::get_if<fetch_failure>(&read)) {
      failure = std::move(*refused);
      if (rejects_suite_token(failure->errcode)) {
        rejected = outcome.view->current->value;
      } else if (failure->kind == failure_class::configuration) {
        break;
      }
      continue;
    }
    const auto& [corpid, permanent_code] = std::get<permanent_code_answer>(read);
    add_corp_here(suite, corpid, permanent_code, corp_origin::callback);
    auto saving = store_->add_corp(suite, corpid,
                                   store_key->seal(permanent_code, corp_binding(suite, corpid)));
    if (!co_await std::move(saving)) {
      spdlog::warn(
          "suite={} corp={} the store could not keep the authorization: this process "
          "serves the corp, the others and a restart will not until it authorizes again",
          suite, corpid);
    }
    co_return;
  }
  spdlog::error(
      "suite={} an auth code could not be exchanged for a permanent code: errcode={} "
      "errmsg=\"{}\"",
      suite, failure ? failure->errcode : local_failure_errcode, failure ? failure->errmsg : "");
}

asio::awaitable<void> broker::adopt_stored_corps() {
  const auto set = third_party();
  for (const auto& [id, suite] : set->suites) {
    if (!suite.store_key) continue;
    auto loading = store_->authorized_corps(id);
    const auto stored = co_await std::move(loading);
    if (!stored) co_return;  // unreachable: tried again when it returns
    std::size_t unreadable = 0;
    for (const auto& [corpid, sealed] : *stored) {
      const auto code = suite.store_key->open(sealed, corp_binding(id, corpid));
      if (!code) {
        ++unreadable;
        continue;
      }
      add_corp_here(id, corpid, *code, corp_origin::callback);
    }
    if (unreadable > 0) {
      spdlog::error(
          "suite={} {} stored corps do not open under store_key_file (another key, or "
          "changed): they are not served",
          id, unreadable);
    }
  }
}

asio::awaitable<void> broker::corp_changed_elsewhere(credential_id corp, bool added) {
  const auto names = naming_values(corp);
  const std::string suite(names[0]), corpid(names[1]);
  if (!added) co_return remove_corp_here(suite, corpid);
  const auto set = third_party();
  const auto* entry = set->suite(suite);
  if (!entry || !entry->store_key) co_return;
  auto loading = store_->authorized_corp(suite, corpid);
  const auto sealed = co_await std::move(loading);
  if (!sealed) co_return;
  const auto code = entry->store_key->open(*sealed, corp_binding(suite, corpid));
  if (!code) {
    spdlog::error(
        "suite={} corp={} the stored permanent code does not open under "
        "store_key_file: not served",
        suite, corpid);
    co_return;
  }
  add_corp_here(suite, corpid, *code, corp_origin::callback);
}

}  // namespace token_broker
