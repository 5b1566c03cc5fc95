"""Measurements of what the polar branch costs next to vanilla Detectron2 (the APIs behind
``tools/benchmark.py`` and ``tools/branch_cost.py``): the compared models (:mod:`.variants`), model
time, memory and FLOPs (:mod:`.models`), the data path (:mod:`.data_loading`) and process memory
(:mod:`.memory`)."""
from .data_loading import (FULL_RESOLUTION, build_mappers, mapper_config, mapper_throughput, measure_loader_training, measure_mappers,
                           worker_memory_in_fresh_process, worker_memory_run, write_synthetic_files)
from .memory import PeakMemory, child_pids, peak_rss_mb, process_memory_mb, run_in_fresh_process
from .models import (ModelRunner, add_ratios, measure_models, model_inputs, op_delta_rows, op_times,
                     parse_size, peak_memory_in_fresh_process, profile_train_steps, random_batch)
from .variants import (POLAR_VARIANTS, VANILLA, VARIANTS, ModelVariant, base_config, build_variant_model, count_flops,
                       get_variants, is_polar, num_parameters, variant_config)

__all__ = [
    "FULL_RESOLUTION", "POLAR_VARIANTS", "VANILLA", "VARIANTS", "ModelRunner", "PeakMemory", "ModelVariant", "add_ratios", "base_config",
    "build_mappers", "build_variant_model", "child_pids", "count_flops", "get_variants", "is_polar", "mapper_config",
    "mapper_throughput", "measure_loader_training", "measure_mappers", "measure_models", "model_inputs",
"num_parameters", "op_delta_rows", "op_times", "parse_size", "peak_memory_in_fresh_process",
    "peak_rss_mb", "process_memory_mb", "profile_train_steps", "random_batch", "run_in_fresh_process",
    "variant_config", "worker_memory_in_fresh_process", "worker_memory_run", "write_synthetic_files",
]
