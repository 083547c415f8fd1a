"""A mini RLHF pipeline in the style of InstructGPT: supervised fine-tuning -> reward model -> PPO.

The three stages follow Ouyang et al. (2022), "Training language models to follow instructions with
human feedback" (InstructGPT):

1. SFT: fine-tune the language model on demonstrations (prompt, response) (`data.py`).
2. Reward model: sample K responses per prompt, let a labeler rank them (`labelers.py`: simulated
   annotators, or a person in the app), turn every ranking into its K-choose-2 (chosen, rejected)
   pairs, and train a scalar reward with the pairwise loss -log sigmoid(r_chosen - r_rejected).
3. PPO: optimise the policy against the reward model with a per-token KL penalty to the SFT model
   (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", including the adaptive
   KL coefficient), using the clipped surrogate objective of PPO (Schulman et al. 2017, "Proximal Policy
   Optimization Algorithms") and generalised advantage estimation (Schulman et al. 2016, "High-Dimensional
   Continuous Control Using Generalized Advantage Estimation").

The math of stage 3 lives in small pure functions in `ppo_math.py`, each unit-tested against values
worked out by hand. This file imports nothing: import the submodule you need.
"""
