from dataclasses import fields

from lsp_server.settings import CAMEL_KEYS, Settings, parse_settings


def test_camel_case_keys_fill_the_dataclass():
    s, problems = parse_settings({"model": "~/m", "fimFormat": "psm", "maxContextTokens": 8192,
                                  "maxNewTokens": 32, "temperature": 0.2, "device": "cuda:1",
                                  "dtype": "bf16", "backend": "http://localhost:8080/v1"})
    assert problems == []
    assert s.model.endswith("/m") and not s.model.startswith("~")
    assert (s.fim_format, s.max_context_tokens, s.max_new_tokens) == ("psm", 8192, 32)
    assert (s.device, s.dtype, s.backend, s.temperature) == ("cuda:1", "bfloat16", "http://localhost:8080/v1", 0.2)


def test_section_wrapper_and_unknown_keys_are_accepted():
    s, problems = parse_settings({"codellama": {"maxNewTokens": 5, "someEditorUiKey": True}})
    assert s.max_new_tokens == 5 and problems == []


def test_invalid_values_fall_back_to_defaults_with_a_message_each():
    base = Settings()
    s, problems = parse_settings({"fimFormat": "xyz", "maxNewTokens": -3, "temperature": "hot",
                                  "device": "tpu", "maxContextTokens": 10**9, "dtype": 3, "enable": "yes",
                                  "exclude": "*.log", "backend": "ftp://x"})
    assert len(problems) == 9
    assert all("codellama." in p and "default" in p for p in problems)
    assert (s.fim_format, s.max_new_tokens, s.temperature, s.device) == (
        base.fim_format, base.max_new_tokens, base.temperature, base.device)
    assert s.max_context_tokens is None and s.backend == "local"


def test_default_fim_format_is_spm_and_nulls_mean_default_model():
    s, problems = parse_settings({"model": None, "adapter": ""})
    assert s.fim_format == "spm" and s.model is None and s.adapter is None and not problems


def test_not_an_object_keeps_previous_settings():
    base = Settings(max_new_tokens=7)
    s, problems = parse_settings(["nope"], base)
    assert s.max_new_tokens == 7 and len(problems) == 1


def test_budget_respects_model_context_and_room_for_generation():
    s = Settings(max_context_tokens=100_000, max_new_tokens=128)
    assert s.context_budget(4096, on_gpu=True) == 4096 - 128 - 8
    assert Settings().context_budget(100_000, on_gpu=False) == 2048
    assert Settings().context_budget(100_000, on_gpu=True) == 16384


def test_engine_key_changes_only_with_model_settings():
    a = Settings()
    assert a.engine_key() == Settings(max_new_tokens=3, fim_format="psm").engine_key()
    assert a.engine_key() != Settings(model="/x").engine_key()
    assert a.engine_key() != Settings(device="cpu").engine_key()


def test_quantization_is_validated_and_a_change_needs_a_reload():
    s, problems = parse_settings({"quantization": "INT4"})
    assert s.quantization == "int4" and not problems
    assert s.engine_key() != Settings().engine_key()
    s, problems = parse_settings({"quantization": "q4_0"})
    assert s.quantization == "none" and problems == [
        "Setting codellama.quantization = 'q4_0' must be one of none, int8, int4; using the default."]


def test_kv_cache_dtype_is_parsed_and_reloads_the_engine():
    s, problems = parse_settings({"kvCacheDtype": "INT8"})
    assert s.kv_cache_dtype == "int8" and problems == []
    assert s.engine_key() != Settings().engine_key()  # a change reloads the model, as dtype does
    s, problems = parse_settings({"kvCacheDtype": "int4"})
    assert s.kv_cache_dtype == "auto" and len(problems) == 1 and "codellama.kvCacheDtype" in problems[0]


def test_every_setting_is_parsed_from_what_a_client_sends():
    # A key without a parser fails the whole `initialize` (a KeyError) when a client sends it.
    camel = {name: key for key, name in CAMEL_KEYS.items()}
    defaults = {camel[f.name]: getattr(Settings(), f.name) for f in fields(Settings)}
    defaults["exclude"] = []  # JSON has lists, not tuples
    s, problems = parse_settings(defaults)
    assert problems == [] and s == Settings()
    s, problems = parse_settings({"prefetchAfterAccept": False})
    assert s.prefetch_after_accept is False and problems == []
