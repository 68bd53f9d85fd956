"""The report's sections: one module per section, each a function of the results table (and the run
folders or figure folder it needs) returning a list of ``doc`` blocks; ``report.build_report`` puts them in
order."""
