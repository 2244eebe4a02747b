//! Measuring attention reuse: map similarity, timing statistics, the
//! downstream task (probe or prompt), evaluation of a policy and calibration of thresholds.

mod accounting;
mod bench;
mod blocks;
mod calibrate;
mod classifier;
mod evaluate;
mod index_bench;
mod machine;
mod modular;
mod modular_calibrate;
mod modular_frontier;
mod oracle;
mod prefix;
mod probe;
mod prompt;
mod report;
mod retrieval;
mod stats;

pub use accounting::{Accounting, AccountingStep, accounting_ladder};
pub use bench::{BenchRow, LookupStages, bench};
pub use blocks::{BlockPlan, BlockTimes, timed_blocks};
pub use calibrate::{CalibrateOptions, Objective, PolicyKind, calibrate};
pub use classifier::Classifier;
pub use evaluate::{
    Evaluation, MeanTimings, evaluate, evaluate_until, pass_median_ratio, timed_pairs,
};
pub use index_bench::{IndexBenchRow, index_bench};
pub use machine::Machine;
pub use modular::{
    Group, HeadView, Latency, ModularBench, ModularEval, ModularOptions, TaskAccuracy, Ttft,
};
pub use modular_calibrate::{
    RecoveryCalibration, RecoveryObjective, RecoveryPoint, calibrate_recovery,
};
pub use modular_frontier::{Frontier, FrontierPoint, every_setting, measure_frontier};
pub use oracle::{
    ORACLE_NOISE, ORACLE_SCALE, OracleChoice, oracle_choices, oracle_frontier, oracle_gain_share,
    oracle_plan,
};
pub use prefix::{PrefixComparison, RunFigures, compare_with_prefix_cache};
pub use probe::Probe;
pub use prompt::{
    PromptClassifier, SENTIMENT_QUESTION, few_shot_corpus, few_shot_prompt, pick_shots,
    sentiment_prompt, task_corpus, task_input, task_text,
};
pub use report::{Example, ReportData, ReportOptions, collect as collect_report, sweep_point};
pub use retrieval::{LayerRetrieval, retrieval_quality};
pub use stats::{mean, median, percentile};
