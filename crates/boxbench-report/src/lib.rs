//! boxbench's report: the results schema, the claim verdicts, the plots and the rendered report.
