#pragma once
// Loom: run Hugging Face LLaMA-family checkpoints from C++.
//
//   auto model = loom::models::load_model("HuggingFaceTB/SmolLM2-135M");  // or a folder
//   loom::ThreadPool pool(2);
//   auto result = loom::generate::generate(*model.network, prompt_ids, {}, pool);
#include "loom/core/aligned.hpp"
#include "loom/core/config.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/file_image.hpp"
#include "loom/core/random.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/command_line.hpp"
#include "loom/generate/generator.hpp"
#include "loom/generate/sampler.hpp"
#include "loom/io/hf_config.hpp"
#include "loom/io/hf_hub.hpp"
#include "loom/io/npy.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/kernels/math.hpp"
#include "loom/models/llama.hpp"
#include "loom/models/load.hpp"
#include "loom/models/make_model_command.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/chat/chat_template.hpp"
#include "loom/tokenizer/load.hpp"
#include "loom/tokenizer/streaming.hpp"
#include "loom/trace/command_line.hpp"
#include "loom/train/command_line.hpp"
#include "loom/train/trainer.hpp"
