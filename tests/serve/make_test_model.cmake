# The model of the server tests: SmolLM2-135M's shapes cut to 2 layers (bf16, deterministic
# synthetic weights) with SmolLM2's real tokenizer and chat template, so text, chat and
# token ids all go through real code paths while a forward pass stays cheap.
#   cmake -DMAKE_MODEL=<loom_make_model> -DSOURCE_DIR=<repo> -DOUT=<folder> -P make_test_model.cmake
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${MAKE_MODEL}" --preset smollm2-135m --layers 2 --dtype bf16 --std 0.05 --out "${OUT}"
                RESULT_VARIABLE status OUTPUT_QUIET)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "loom_make_model failed (${status})")
endif()
file(COPY "${SOURCE_DIR}/tests/data/tokenizers/smollm2-135m-instruct/tokenizer.json"
          "${SOURCE_DIR}/tests/data/tokenizers/smollm2-135m-instruct/tokenizer_config.json"
          "${SOURCE_DIR}/tests/data/chat_templates/smollm2-1.7b-instruct/chat_template.jinja"
     DESTINATION "${OUT}")
