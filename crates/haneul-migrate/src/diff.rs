//! `haneul diff A B`: two archives compared study by study.
