"""The seed designs of the zoo (WatchSleepNet, ULW-SleepNet, MASleepNet, SleepVST, SlumberNet): published
architectures, their streaming variants, and the documented synthetic generators the shipped weights were
trained on where no real labelled data of their kind exists here."""
