#pragma once
// Saving trained weights as a Hugging Face model folder that loom_generate, loom_serve and
// PyTorch load like any other: config.json, model.safetensors (in the checkpoint's own
// dtypes, or f32), and the tokenizer and generation files copied from the source folder.
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/io/json_file.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/train/parameters.hpp"

namespace loom::train {

enum class SaveDtype { original, f32 };

inline SaveDtype parse_save_dtype(const std::string& name) {
    if (name == "original") return SaveDtype::original;
    if (name == "f32" || name == "float32") return SaveDtype::f32;
    throw argument_error("save dtype must be 'original' or 'f32', got '" + name + "'");
}

namespace detail {

inline std::string torch_dtype_name(DType dtype) {
    switch (dtype) {
        case DType::f32: return "float32";
        case DType::bf16: return "bfloat16";
        case DType::f16: return "float16";
    }
    return "float32";
}

// Weights and the files that describe them are written, never copied from the source.
inline bool written_here(const std::string& file) {
    return file == "config.json" || file.ends_with(".safetensors") || file.ends_with(".safetensors.index.json") ||
           file.ends_with(".partial") || file == "training_state.safetensors";
}

inline void create_folder(const std::filesystem::path& folder) {
    std::error_code status;
    std::filesystem::create_directories(folder, status);
    if (status) throw error(folder.string() + ": cannot create the output folder: " + status.message());
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
    io::detail::write_file(path, [&](std::ostream& out) { out.write(text.data(), std::streamsize(text.size())); });
}

}  // namespace detail

// Writes `parameters` into `folder` (created if missing) as a model folder. config_json is
// the model's config.json; its torch_dtype follows what is saved. The other files of
// `source_folder` (tokenizer, chat template, generation config), if it is not empty, are
// copied. Every file goes through a temporary name, so an interrupted save never leaves a
// truncated file under its final name.
inline void save_model(const Parameters& parameters, nlohmann::json config_json,
                       const std::filesystem::path& source_folder, const std::filesystem::path& folder,
                       SaveDtype dtype = SaveDtype::original) {
    detail::create_folder(folder);
    DType widest = DType::bf16;
    if (dtype == SaveDtype::f32) {
        io::write_safetensors(folder / "model.safetensors", parameters.views());
        widest = DType::f32;
    } else {
        std::vector<io::TensorToWrite> tensors;
        for (const Parameter& parameter : parameters.list()) {
            tensors.push_back({parameter.name, parameter.stored_dtype, parameter.shape,
                               std::vector<float>(parameter.value, parameter.value + parameter.size)});
            if (parameter.stored_dtype == DType::f32) widest = DType::f32;
            else if (parameter.stored_dtype == DType::f16 && widest != DType::f32) widest = DType::f16;
        }
        io::write_safetensors(folder / "model.safetensors", tensors);
    }
    if (config_json.contains("dtype")) config_json["dtype"] = detail::torch_dtype_name(widest);
    config_json["torch_dtype"] = detail::torch_dtype_name(widest);
    detail::write_text(folder / "config.json", config_json.dump(2) + "\n");

    if (source_folder.empty()) return;
    std::error_code status;
    if (std::filesystem::equivalent(source_folder, folder, status)) return;
    for (std::filesystem::directory_iterator it(source_folder, status), end; !status && it != end; it.increment(status)) {
        const std::string name = it->path().filename().string();
        if (!it->is_regular_file() || detail::written_here(name)) continue;
        // A copy made by an earlier save may be read-only (so was its source): replace it, not overwrite it.
        std::error_code copied;
        std::filesystem::remove(folder / name, copied);
        std::filesystem::copy_file(it->path(), folder / name, copied);
        if (copied) throw error((folder / name).string() + ": cannot copy from " + it->path().string() + ": " + copied.message());
    }
    if (status) throw error(source_folder.string() + ": cannot list the model folder: " + status.message());
}

}  // namespace loom::train
