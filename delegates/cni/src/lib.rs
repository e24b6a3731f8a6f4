//! CNI spec 1.1 core: config, results, errors, versions, env, plugin skeleton
