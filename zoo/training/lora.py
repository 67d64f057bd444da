"""LoRA for zoo-train's `lora` section: `zoo.checkpoints.lora` (below training, since reading a fine-tuned
checkpoint needs it), re-exported."""

from zoo.checkpoints.lora import (
    DEFAULT_TARGETS,
    LoRAConfig,
    apply_lora,
    load_lora_state_dict,
    lora_settings,
    lora_state_dict,
    merge_lora,
    parameter_summary,
    peft_adapter_config,
    unload_lora,
)

__all__ = ["DEFAULT_TARGETS", "LoRAConfig", "apply_lora", "load_lora_state_dict", "lora_settings", "lora_state_dict",
           "merge_lora", "parameter_summary", "peft_adapter_config", "unload_lora"]
